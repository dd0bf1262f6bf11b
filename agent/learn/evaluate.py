"""The six-subtask evaluation: does the model follow a skill with no skill, in context, or as a LoRA?

For each (skill, task, reference) item the model answers the task
  none        without the skill,
  icl         with the skill text as the system message,
  parametric  with the skill's generated LoRA applied and no skill in context,
  random      with a LoRA generated from unrelated text (the control: it must score lower than parametric),
and with fixed-adapter baselines (`Baseline`: one PEFT LoRA for every item, or one per skill).
Adherence is the skill's own checker passing; token F1 and BERTScore compare with the reference; an
optional LLM judge (agent.learn.judge) scores 1-10.

Generation is batched across items and modes, continuously (agent.learn.generation): up to --batch-size
rows decode together, greedy, each under its own adapter, and a row that finishes takes the next request.

Or the answers come from an OpenAI-compatible server (`ServedGeneration`, vLLM with runtime LoRA loading):
the adapters are still made here, and each is loaded there once, for all of its rows (`generate_served`).
"""

from __future__ import annotations

import json
import random
import time
import uuid
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch

from agent.checks import check
from agent.learn.generation import BATCH_SIZE, Request, generate_all
from agent.learn.metrics import bertscore_f1, cluster_bootstrap_ci, token_f1
from agent.runtime.base_model import LoadedModel
from agent.runtime.endpoint import EndpointChat
from agent.runtime.hypernet_loader import HypernetHandle
from agent.runtime.served_adapter import ServedAdapter, serve_adapter
from agent.runtime.skill_adapters import convert_skill
from hypernet.config import HypernetError
from hypernet.inject import apply_lora
from hypernet.lora import LoraWeights
from hypernet.peft_io import CONFIG_NAME, import_peft
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
    # local: this row's share of the generation's wall time (its prefill + 1/n of each step it was in);
    # served: its request's wall time (requests in flight together overlap)
    seconds: float
    judge: float | None = None  # 1-10; None when not judged or the judge's reply had no score
    judge_missing: bool = False  # judged, but the reply could not be parsed


@dataclass
class EvalReport:
    run_id: str
    base_model: str
    hypernet: str
    trained_hypernet: bool
    split: str
    n_items: int
    table: dict[str, dict[str, dict]]  # mode -> subtask|overall -> metric -> value (check_score_ci95: [lo, hi])
    items: list[ItemResult] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)  # baseline mode -> items whose skill has no adapter
    baselines: dict[str, str] = field(default_factory=dict)  # baseline mode -> PEFT path
    judge_model: str | None = None
    generator: dict | None = None  # answers from a server: ServedGeneration.record(); None: this machine
    differences: dict[str, dict] = field(default_factory=dict)  # "a - b" -> paired check-score difference

    def to_dict(self, with_items: bool = False) -> dict:
        d = asdict(self)
        if not with_items:
            d.pop("items")
        return d


# --- fixed-adapter baselines -----------------------------------------------------------------------

@dataclass
class Baseline:
    """A PEFT LoRA applied to every item (multi-task LoRA), or one per skill by folder name (oracle)."""

    label: str
    path: Path
    shared: LoraWeights | None = None
    per_skill: dict[str, LoraWeights] = field(default_factory=dict)

    def lora_for(self, skill: str) -> LoraWeights | None:
        return self.shared if self.shared is not None else self.per_skill.get(skill)


def _import_checked(folder: Path, loaded: LoadedModel, label: str) -> LoraWeights:
    lora = import_peft(folder)
    # "": the adapter does not say (shapes are still checked); a folder path: PEFT saved from this model
    known = {"", loaded.name, str(getattr(loaded.model.config, "_name_or_path", "") or "")}
    if lora.base_model not in known:
        raise HypernetError(f"baseline {label}: {folder} was trained on base model {lora.base_model!r}, "
                            f"not {loaded.name!r}")
    try:
        lora.check_model(loaded.model)
    except HypernetError as e:
        raise HypernetError(f"baseline {label}: {folder} does not fit {loaded.name}: {e}") from None
    return lora


def load_baseline(label: str, path: Path, loaded: LoadedModel) -> Baseline:
    path = Path(path)
    if (path / CONFIG_NAME).is_file():
        return Baseline(label, path, shared=_import_checked(path, loaded, label))
    if not path.is_dir():
        raise HypernetError(f"baseline {label}: {path} is not a folder")
    # hidden folders are a trainer's staging folders, not skills
    per_skill = {sub.name: _import_checked(sub, loaded, label) for sub in sorted(path.iterdir())
                 if not sub.name.startswith(".") and (sub / CONFIG_NAME).is_file()}
    if not per_skill:
        raise HypernetError(f"baseline {label}: {path} is neither a PEFT adapter folder nor a folder of them")
    return Baseline(label, path, per_skill=per_skill)


def skipped_counts(items, baselines: dict[str, Baseline]) -> dict[str, int]:
    return {label: sum(b.lora_for(it.skill.name) is None for it in items) for label, b in baselines.items()}


# --- answers from a server ---------------------------------------------------------------------------

@dataclass
class ServedGeneration:
    """Answers from an OpenAI-compatible server whose `chat.model` is the local model's base (`agent eval
    --generate-endpoint`); adapters are written under `folder` for it to read by path. `adapters` collects
    what each loaded adapter was (ServedAdapter.record() + its mode and skills) as the evaluation runs."""

    chat: EndpointChat
    folder: Path | None = None
    warn: Callable[[str], None] | None = None
    adapters: list[dict] = field(default_factory=list)

    def record(self) -> dict:
        return {"endpoint": self.chat.url, "model": self.chat.model, "adapters": self.adapters}


def adapter_groups(requests: list[Request]) -> list[tuple[LoraWeights | None, list[int]]]:
    """Request indices by adapter, in request order: the base model's rows first, then one group per
    distinct adapter object (`plan` makes one per skill and mode, a shared baseline is one), in order of
    first use."""
    groups: dict[int, tuple[LoraWeights | None, list[int]]] = {id(None): (None, [])}
    for i, r in enumerate(requests):
        groups.setdefault(id(r.lora), (r.lora, []))[1].append(i)
    return [g for g in groups.values() if g[1]]


def _answer(chat: EndpointChat, requests: list[Request], rows: list[int], max_new_tokens: int, workers: int,
            answers: list[str], on_done: Callable[[list[int], float], None] | None) -> None:
    """Rows answered by `chat`, up to `workers` requests in flight (the server batches them)."""
    def one(i: int) -> tuple[int, str, float]:
        start = time.perf_counter()
        text, _ = chat.chat(requests[i].messages, max_tokens=max_new_tokens)  # greedy: temperature 0
        return i, text, time.perf_counter() - start

    pool = ThreadPoolExecutor(max_workers=max(1, min(workers, len(rows))))
    try:
        for done in as_completed([pool.submit(one, i) for i in rows]):
            i, text, seconds = done.result()  # the first EndpointError ends the group
            answers[i] = text
            if on_done:
                on_done([i], seconds)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)  # on an error: drop the queued rows, do not wait


def generate_served(served: ServedGeneration, requests: list[Request], max_new_tokens: int, workers: int,
                    on_done: Callable[[list[int], float], None] | None = None,
                    on_load: Callable[[ServedAdapter, list[int]], None] | None = None) -> list[str]:
    """Answers in request order from the server, greedy, max_new_tokens each, the same messages as here.
    Rows without an adapter ask for the served base model; each distinct adapter is loaded once, answers
    all of its rows and is unloaded before the next is loaded (a --max-loras 1 server never swaps, and an
    error or Ctrl-C leaves nothing loaded: serve_adapter). on_load(adapter, rows) follows each load.

    The server applies the chat template itself and does not cut a prompt longer than its context as
    `_prompt` does here: eval prompts are far shorter than either model's context."""
    answers: list[str] = [""] * len(requests)
    for lora, rows in adapter_groups(requests):
        if lora is None:
            _answer(served.chat, requests, rows, max_new_tokens, workers, answers, on_done)
            continue
        with serve_adapter(served.chat, lora, served.chat.model, folder=served.folder,
                           warn=served.warn) as (as_adapter, adapter):
            if on_load:
                on_load(adapter, rows)
            _answer(as_adapter, requests, rows, max_new_tokens, workers, answers, on_done)
    return answers


# --- the evaluation ----------------------------------------------------------------------------------

def _messages(task_prompt: str, system: str | None) -> list[dict[str, str]]:
    return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": task_prompt}]


def _adapter(mode: str, item, loaded: LoadedModel, handle: HypernetHandle | None, store: Store | None,
             baselines: dict[str, Baseline], cache: dict) -> LoraWeights | None:
    if mode in baselines:
        return baselines[mode].lora_for(item.skill.name)
    key = (mode, item.skill.name)
    if key not in cache:  # one conversion per skill, however many tasks it has
        doc = item.skill if mode == "parametric" else SkillDoc(
            item.skill.name + "-control", "control", control_text(item.skill))
        cache[key] = convert_skill(store if mode == "parametric" else None, loaded, handle, doc).lora
    return cache[key]


def plan(items, loaded: LoadedModel, handle: HypernetHandle | None, modes=MODES, store: Store | None = None,
         baselines: dict[str, Baseline] | None = None) -> tuple[list[tuple], list[Request]]:
    """The (item, mode) pairs to answer and their prompts + adapters; converts each skill once."""
    baselines = baselines or {}
    unknown = [m for m in modes if m not in MODES and m not in baselines]
    if unknown:
        raise ValueError(f"unknown modes {unknown}")
    cache: dict = {}
    jobs, requests = [], []
    for item in items:
        for mode in modes:
            lora = _adapter(mode, item, loaded, handle, store, baselines, cache) if mode not in ("none", "icl") \
                else None
            if mode in baselines and lora is None:
                continue
            jobs.append((item, mode))
            requests.append(Request(_messages(item.task.prompt, item.skill.text if mode == "icl" else None), lora))
    return jobs, requests


def evaluate(items, loaded: LoadedModel, handle: HypernetHandle | None, modes=MODES, store: Store | None = None,
             max_new_tokens: int = 200, bertscore: bool = True,
             progress: Callable[[str], None] | None = None, batch_size: int = BATCH_SIZE,
             baselines: dict[str, Baseline] | None = None, judge=None,
             served: ServedGeneration | None = None) -> list[ItemResult]:
    """Every item under every mode; a baseline mode skips items whose skill it has no adapter for.

    `served`: the answers come from that server (generate_served), each adapter recorded in
    served.adapters; else from `loaded` here. `judge` (agent.learn.judge.Judge) scores each response after
    generation; its EndpointError propagates (as the server's does).
    """
    jobs, requests = plan(items, loaded, handle, modes, store, baselines)
    seconds = [0.0] * len(jobs)

    def batch_done(rows: list[int], elapsed: float) -> None:
        for i in rows:
            seconds[i] = round(elapsed / len(rows), 2)
            if progress:
                progress(f"{jobs[i][0].skill.name} [{jobs[i][1]}]")

    if served is None:
        answers = generate_all(loaded.model, loaded.tokenizer, requests, max_new_tokens, batch_size, batch_done)
    else:
        def loaded_on_server(adapter: ServedAdapter, rows: list[int]) -> None:
            served.adapters.append(adapter.record() | {
                "mode": jobs[rows[0]][1], "skills": sorted({jobs[i][0].skill.name for i in rows}),
                "answers": len(rows)})

        answers = generate_served(served, requests, max_new_tokens, batch_size, batch_done, loaded_on_server)
    results = []
    for (item, mode), response, secs in zip(jobs, answers, seconds):
        verdict = check(response, item.skill.metadata.get("checks", ""), item.task)
        results.append(ItemResult(
            item.skill.name, item.skill.subtask or "", item.task.id, mode, verdict.passed, verdict.score,
            token_f1(response, item.reference), bertscore_f1(response, item.reference) if bertscore else 0.0,
            verdict.failures, response, secs))
    if judge is not None:
        for (item, _), r in zip(jobs, results):
            r.judge = judge.score(item.skill.text, item.task.prompt, item.reference, r.response)
            r.judge_missing = r.judge is None
    return results


def _judge_metrics(rs: list[ItemResult]) -> dict[str, float | int | None]:
    scored = [r.judge for r in rs if r.judge is not None]
    return {"judge": round(sum(scored) / len(scored), 2) if scored else None,
            "judge_n": len(scored), "judge_missing": sum(r.judge_missing for r in rs)}


def aggregate(results: list[ItemResult]) -> dict[str, dict[str, dict]]:
    judged = any(r.judge is not None or r.judge_missing for r in results)
    groups: dict[tuple[str, str], list[ItemResult]] = defaultdict(list)
    for r in results:
        groups[(r.mode, r.subtask)].append(r)
        groups[(r.mode, "overall")].append(r)
    table: dict[str, dict[str, dict]] = defaultdict(dict)
    for (mode, subtask), rs in sorted(groups.items()):
        n = len(rs)
        table[mode][subtask] = {
            "adherence": round(100 * sum(r.passed for r in rs) / n, 2),
            "check_score": round(100 * sum(r.check_score for r in rs) / n, 2),
            "token_f1": round(100 * sum(r.token_f1 for r in rs) / n, 2),
            "bertscore": round(100 * sum(r.bertscore for r in rs) / n, 2),
            "check_score_ci95": [round(100 * x, 2) for x in cluster_bootstrap_ci([r.check_score for r in rs],
                                                                                 [r.skill for r in rs])],
            "n": n,
        } | (_judge_metrics(rs) if judged else {})
    return dict(table)


def differences(results: list[ItemResult]) -> dict[str, dict]:
    """Check-score difference of every pair of modes over the items both answered (a baseline skips some),
    with a 95 % interval from the same bootstrap over skills. Paired, so a task's own difficulty cancels:
    the interval of a difference is narrower than the two modes' intervals side by side suggest."""
    score = {(r.mode, r.skill, r.task_id): r.check_score for r in results}
    modes = mode_order({r.mode: None for r in results})
    out = {}
    for i, a in enumerate(modes):  # each mode against the ones before it: parametric - icl, oracle - none, ...
        for b in modes[:i]:
            both = [(s, t) for m, s, t in score if m == a and (b, s, t) in score]
            if not both:
                continue
            diff = [score[(a, s, t)] - score[(b, s, t)] for s, t in both]
            lo, hi = cluster_bootstrap_ci(diff, [s for s, _ in both])
            out[f"{a} - {b}"] = {"check_score": round(100 * sum(diff) / len(diff), 2),
                                 "ci95": [round(100 * lo, 2), round(100 * hi, 2)], "n": len(both)}
    return out


def record(store: Store, report: EvalReport, hypernet_id: int | None) -> None:
    # answers from a server: which one, on each row (its adapters' names and hashes are in the JSON file)
    generator = ({"generator": {k: report.generator[k] for k in ("endpoint", "model")}} if report.generator
                 else {})
    with store.session() as s:
        for mode, rows in report.table.items():
            for subtask, metrics in rows.items():
                for metric in METRICS:
                    s.add(EvalResult(run_id=report.run_id, mode=mode, split=report.split, subtask=subtask,
                                     metric=metric, value=metrics[metric], n=int(metrics["n"]),
                                     base_model=report.base_model, hypernet_id=hypernet_id,
                                     details={"hypernet": report.hypernet} | generator))
                if metrics.get("judge") is not None:
                    s.add(EvalResult(run_id=report.run_id, mode=mode, split=report.split, subtask=subtask,
                                     metric="judge", value=metrics["judge"], n=int(metrics["judge_n"]),
                                     base_model=report.base_model, hypernet_id=hypernet_id,
                                     details={"hypernet": report.hypernet, "judge_model": report.judge_model,
                                              "missing": metrics["judge_missing"]} | generator))


def mode_order(table: dict) -> list[str]:
    """Built-in modes in their usual order, then the baselines by name."""
    return [m for m in MODES if m in table] + [m for m in table if m not in MODES]


def write_results(report: EvalReport, out_dir: Path) -> tuple[Path, Path | None]:
    """JSON (table + items + machine info) and a grouped bar chart of adherence per subtask and mode; the
    chart (None) only where matplotlib is installed (the `bench` extra: the CLI does not need it)."""
    import platform

    import torch

    out_dir.mkdir(parents=True, exist_ok=True)
    data = report.to_dict(with_items=True) | {"machine": {
        "platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
        "cpus": torch.get_num_threads(), "cuda": torch.cuda.is_available()}}
    json_path = out_dir / f"eval_{report.split}.json"
    json_path.write_text(json.dumps(data, indent=2, default=str))
    try:
        import matplotlib
    except ImportError:
        return json_path, None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = mode_order(report.table)
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


def reference_logprobs(loaded: LoadedModel, items, lora: LoraWeights | None) -> list[tuple[float, int]]:
    """(sum of log-probabilities, token count) of each item's reference answer, teacher-forced under the model
    with `lora` applied (None: the base model) and no skill in context: one forward pass per item, no
    generation. The cheap behavioural score of an adapter (the accumulate gate, the forgetting benchmark)."""
    from contextlib import nullcontext

    from agent.learn.hypernet_runs import IGNORE, tokenize_chat

    model, device = loaded.model, next(loaded.model.parameters()).device
    out = []
    applied = apply_lora(model, lora, base_model=loaded.name) if lora is not None else nullcontext()
    with applied, torch.no_grad():
        for item in items:
            ids, labels = tokenize_chat(loaded.tokenizer, [{"role": "user", "content": item.task.prompt},
                                                           {"role": "assistant", "content": item.reference}],
                                        max_tokens=1024)
            logits = model(input_ids=torch.tensor([ids], device=device)).logits[0, :-1].float()
            target = torch.tensor(labels[1:], device=device)
            keep = target != IGNORE
            logp = torch.log_softmax(logits[keep], dim=-1).gather(1, target[keep, None])
            out.append((float(logp.sum()), int(keep.sum())))
    return out


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
