"""The six-subtask evaluation: does the model follow a skill with no skill, in context, or as a LoRA?

For each (skill, task, reference) item the model answers the task
  none        without the skill,
  icl         with the skill text as the system message,
  parametric  with the skill's generated LoRA applied and no skill in context,
  random      with a LoRA generated from unrelated text (the control: it must score lower than parametric).
Adherence is the skill's own checker passing; token F1 and BERTScore compare with the reference.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from agent.backends import LocalChat
from agent.checks import check
from agent.conversion import convert_skill
from agent.hypernets import HypernetHandle
from agent.metrics import bertscore_f1, token_f1
from agent.models import LoadedModel
from hypernet.inject import apply_lora
from memory.db import Store
from memory.models import EvalResult
from memory.skillfile import SkillDoc

MODES = ("none", "icl", "parametric", "random")
METRICS = ("adherence", "check_score", "token_f1", "bertscore")
_WORDS = ("river stone window harvest orbit lantern velvet meadow copper violin glacier pepper marble "
          "compass thunder saddle orchard canyon feather harbor").split()


def control_text(doc: SkillDoc, seed: int = 0) -> str:
    """Unrelated words of about the skill's length: what the hypernetwork sees in the random control."""
    rng = random.Random(f"{doc.name}:{seed}")
    return " ".join(rng.choice(_WORDS) for _ in range(max(20, len(doc.text.split()))))


@dataclass
class ItemResult:
    skill: str
    subtask: str
    task_id: str
    mode: str
    passed: bool
    check_score: float
    token_f1: float
    bertscore: float
    failures: list[str]
    response: str
    seconds: float


@dataclass
class EvalReport:
    run_id: str
    base_model: str
    hypernet: str
    trained_hypernet: bool
    split: str
    n_items: int
    table: dict[str, dict[str, dict[str, float]]]  # mode -> subtask|overall -> metric -> value
    items: list[ItemResult] = field(default_factory=list)

    def to_dict(self, with_items: bool = False) -> dict:
        d = asdict(self)
        if not with_items:
            d.pop("items")
        return d


def _answer(chat: LocalChat, task_prompt: str, system: str | None) -> str:
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": task_prompt}]
    return chat.chat(messages)[0]


def evaluate(items, loaded: LoadedModel, handle: HypernetHandle | None, modes=MODES, store: Store | None = None,
             max_new_tokens: int = 200, bertscore: bool = True,
             progress: Callable[[str], None] | None = None) -> list[ItemResult]:
    chat = LocalChat(loaded.model, loaded.tokenizer, max_new_tokens=max_new_tokens, stop_after_block=False)
    results = []
    for item in items:
        spec = item.skill.metadata.get("checks", "")
        for mode in modes:
            start = time.perf_counter()
            if mode in ("parametric", "random"):
                doc = item.skill if mode == "parametric" else SkillDoc(
                    item.skill.name + "-control", "control", control_text(item.skill))
                lora = convert_skill(store if mode == "parametric" else None, loaded, handle, doc).lora
                with apply_lora(loaded.model, lora, mode="merge"):
                    response = _answer(chat, item.task.prompt, None)
            else:
                response = _answer(chat, item.task.prompt, item.skill.text if mode == "icl" else None)
            verdict = check(response, spec, item.task)
            results.append(ItemResult(
                item.skill.name, item.skill.subtask or "", item.task.id, mode, verdict.passed, verdict.score,
                token_f1(response, item.reference), bertscore_f1(response, item.reference) if bertscore else 0.0,
                verdict.failures, response, round(time.perf_counter() - start, 2)))
            if progress:
                progress(f"{item.skill.name} [{mode}] {'pass' if verdict.passed else 'fail'}")
    return results


def aggregate(results: list[ItemResult]) -> dict[str, dict[str, dict[str, float]]]:
    groups: dict[tuple[str, str], list[ItemResult]] = defaultdict(list)
    for r in results:
        groups[(r.mode, r.subtask)].append(r)
        groups[(r.mode, "overall")].append(r)
    table: dict[str, dict[str, dict[str, float]]] = defaultdict(dict)
    for (mode, subtask), rs in sorted(groups.items()):
        n = len(rs)
        table[mode][subtask] = {
            "adherence": round(100 * sum(r.passed for r in rs) / n, 2),
            "check_score": round(100 * sum(r.check_score for r in rs) / n, 2),
            "token_f1": round(100 * sum(r.token_f1 for r in rs) / n, 2),
            "bertscore": round(100 * sum(r.bertscore for r in rs) / n, 2),
            "n": n,
        }
    return dict(table)


def record(store: Store, report: EvalReport, hypernet_id: int | None) -> None:
    with store.session() as s:
        for mode, rows in report.table.items():
            for subtask, metrics in rows.items():
                for metric in METRICS:
                    s.add(EvalResult(run_id=report.run_id, mode=mode, split=report.split, subtask=subtask,
                                     metric=metric, value=metrics[metric], n=int(metrics["n"]),
                                     base_model=report.base_model, hypernet_id=hypernet_id,
                                     details={"hypernet": report.hypernet}))


def write_results(report: EvalReport, out_dir: Path) -> tuple[Path, Path]:
    """JSON (table + items + machine info) and a grouped bar chart of adherence per subtask and mode."""
    import platform

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    out_dir.mkdir(parents=True, exist_ok=True)
    data = report.to_dict(with_items=True) | {"machine": {
        "platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
        "cpus": torch.get_num_threads(), "cuda": torch.cuda.is_available()}}
    json_path = out_dir / f"eval_{report.split}.json"
    json_path.write_text(json.dumps(data, indent=2, default=str))
    modes = [m for m in MODES if m in report.table]
    subtasks = sorted({s for m in modes for s in report.table[m] if s != "overall"}) + ["overall"]
    fig, ax = plt.subplots(figsize=(10, 4))
    width = 0.8 / max(1, len(modes))
    for i, mode in enumerate(modes):
        ax.bar([x + i * width for x in range(len(subtasks))],
               [report.table[mode].get(s, {}).get("adherence", 0) for s in subtasks], width, label=mode)
    ax.set_xticks([x + width * (len(modes) - 1) / 2 for x in range(len(subtasks))], subtasks, rotation=20)
    ax.set_ylabel("adherence (% checker pass)")
    ax.set_title(f"{report.base_model}, {report.split} skills, hypernet: {report.hypernet}")
    ax.legend()
    fig.tight_layout()
    png_path = out_dir / f"eval_{report.split}.png"
    fig.savefig(png_path, dpi=110)
    plt.close(fig)
    return json_path, png_path


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
