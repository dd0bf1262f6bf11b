"""The LoRA baselines of the hypernetwork (issue 6): a multi-task LoRA and per-skill "oracle" LoRAs.

    report = run_multitask(loaded, Path("data/synth-train"), Path("data/baselines/multitask-lora"), opts)
    report = run_oracle(loaded, Path("data/synth-heldout"), ["gitmoji-commit"], Path("data/baselines/oracle"), opts)

Both train one plain LoRA with the hypernetwork's default shape (HypernetConfig: rank, alpha, q/v
targets) on stage-2 samples, with no skill text in context (as the hypernetwork's student sees them),
the loss on assistant tokens only, and the same tokenisation, batching and schedule as
`agent hypernet train`. The factors are leaf parameters applied with the hooks of hypernet/inject.py.

- multi-task: one LoRA on all training skills' samples, applied to every held-out skill. Beating it
  shows the hypernetwork reads the skill rather than learning a generic "do the tasks" adapter.
- oracle: one LoRA per skill on that skill's own samples; the report keeps the wall time it took.

Outputs are standard PEFT folders (`PeftModel.from_pretrained` loads them) with a `report.json`
beside the adapter files; an oracle run writes `<out>/<skill>/` folders and `<out>/report.json`.
Every folder is built in a temp folder and renamed into place, so bad input writes nothing.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from agent.learn.hypernet_runs import (
    Sample,
    check_manifest,
    make_example,
    read_jsonl,
    read_manifest,
    tokenizer_fingerprint,
)
from agent.runtime.base_model import LoadedModel
from hypernet.batching import IGNORE, DataOrder, Example, collate
from hypernet.config import HypernetConfig
from hypernet.inject import apply_lora
from hypernet.lora import LoraWeights
from hypernet.peft_io import export_peft, publish_modes
from hypernet.targets import Target, find_targets
from hypernet.train import TrainConfig, _is_oom, evaluate, lm_loss, lr_at
from hypernet.trainstate import TrainingError, atomic_write

__all__ = ["LoraOptions", "REPORT_NAME", "TrainingError", "run_multitask", "run_oracle", "train_lora"]

REPORT_NAME = "report.json"


@dataclass(frozen=True)
class LoraOptions:
    steps: int | None = None  # optimizer steps; default from epochs
    epochs: float = 1.0
    lr: float = 5e-4
    batch_size: int = 4
    max_tokens: int = 512
    seed: int = 0
    max_val_examples: int = 64  # the hypernet's validation subset (TrainConfig.max_val_examples)
    progress: bool = True


def lora_shape() -> HypernetConfig:
    """The hypernetwork's default LoRA shape: a fair baseline has the same rank, alpha and targets."""
    return HypernetConfig()


# --- data ------------------------------------------------------------------------------------------
def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _check_data_dir(loaded: LoadedModel, data: Path) -> None:
    if not data.is_dir():
        raise TrainingError(f"--data {data}: no such folder")
    check_manifest(read_manifest(data), data, loaded.name, tokenizer_fingerprint(loaded.tokenizer))


def _first_file(data: Path, names: Sequence[str]) -> Path:
    found = next((data / n for n in names if (data / n).is_file()), None)
    if found is None:
        raise TrainingError(f"{data}: no {' or '.join(names)} (make it with the synth step)")
    return found


def tokenize_samples(loaded: LoadedModel, samples: Sequence[Sample], max_tokens: int) -> list[Example]:
    """Examples without the skill in context (the key is the skill's name): the student's view."""
    vocab = loaded.model.get_input_embeddings().num_embeddings
    out = []
    for s in samples:
        ex = make_example(loaded.tokenizer, s.messages, s.skill, "", max_tokens, teacher=False)
        if ex is None:
            continue  # truncation left no assistant token
        if max(ex.input_ids) >= vocab:
            raise TrainingError(f"token ids beyond the base model's vocabulary ({vocab}): the tokenizer does "
                                "not belong to this model")
        out.append(ex)
    return out


# --- the LoRA --------------------------------------------------------------------------------------
def init_factors(targets: Sequence[Target], rank: int, seed: int,
                 device: torch.device) -> dict[str, tuple[nn.Parameter, nn.Parameter]]:
    """PEFT's default init: A ~ U(±1/√in) (kaiming_uniform with a=√5), B = 0, so training starts at the base."""
    g = torch.Generator().manual_seed(seed)
    params = {}
    for t in targets:
        bound = 1 / math.sqrt(t.in_features)
        a = (torch.rand(rank, t.in_features, generator=g) * 2 - 1) * bound
        params[t.key] = (nn.Parameter(a.to(device)), nn.Parameter(torch.zeros(t.out_features, rank, device=device)))
    return params


def warm_factors(init: LoraWeights, targets: Sequence[Target], shape: HypernetConfig,
                 device: torch.device) -> dict[str, tuple[nn.Parameter, nn.Parameter]]:
    """Leaf factors that reproduce `init` exactly (its B holds the scaling folded in: undo it)."""
    want = {t.key for t in targets}
    if set(init.factors) != want:
        raise TrainingError(f"--init adapter covers {len(init.factors)} modules, this run trains {len(want)}: "
                            "give it the same --rank and targets")
    params = {}
    for t in targets:
        a, b = init.factors[t.key]
        if a.shape[0] != shape.rank:
            raise TrainingError(f"--init adapter has rank {a.shape[0]}, this run trains rank {shape.rank}")
        params[t.key] = (nn.Parameter(a.float().to(device).clone()),
                         nn.Parameter((b.float() / shape.scaling).to(device).clone()))
    return params


def scaled(params: dict[str, tuple[Tensor, Tensor]], scaling: float) -> dict[str, tuple[Tensor, Tensor]]:
    """(A, alpha/r · B): PEFT's scaling folded into B, as the hypernetwork's generator does."""
    return {k: (a, b * scaling) for k, (a, b) in params.items()}


def lora_loss(base: nn.Module, factors: dict[str, tuple[Tensor, Tensor]], targets: Sequence[Target], batch) -> Tensor:
    with apply_lora(base, factors, targets=targets):
        logits = base(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False).logits
    return lm_loss(logits, batch.labels)


def schedule(opts: LoraOptions, n_examples: int) -> TrainConfig:
    """The hypernet loop's settings and cosine schedule (TrainConfig), sized for this data."""
    steps = opts.steps or max(1, round(opts.epochs * n_examples / opts.batch_size))
    return TrainConfig(stage=2, steps=steps, batch_size=opts.batch_size, lr=opts.lr, min_lr=opts.lr / 10,
                       warmup=min(10, steps // 10), seed=opts.seed)


def _bar(enabled: bool, total: int, desc: str):
    from hypernet.progress import Bar

    return Bar(total, desc) if enabled else None


def train_lora(base: nn.Module, examples: Sequence[Example], pad_id: int, cfg: TrainConfig,
               shape: HypernetConfig, base_model: str, *, progress: bool = False,
               desc: str = "lora", init: LoraWeights | None = None) -> tuple[LoraWeights, dict[str, Any]]:
    """Fine-tune one LoRA (leaf factors through hooks) on `examples`; the adapter and its metrics.
    With `init` (same targets and rank), training continues from that adapter instead of from zero."""
    if not examples:
        raise TrainingError("no training examples (all longer than --max-tokens before the first assistant token?)")
    device = next(base.parameters()).device
    for p in base.parameters():
        p.requires_grad_(False)
    base.eval()
    targets = find_targets(base, shape.target_modules)
    params = init_factors(targets, shape.rank, cfg.seed, device) if init is None else warm_factors(
        init, targets, shape, device)
    leaves = [p for ab in params.values() for p in ab]
    optimizer = torch.optim.AdamW(leaves, lr=cfg.lr, betas=(0.9, cfg.beta2), weight_decay=cfg.weight_decay)
    order = DataOrder([len(e.input_ids) for e in examples], cfg.batch_size, cfg.seed)
    losses: list[float] = []
    tokens = target_tokens = 0
    bar = _bar(progress, cfg.steps, desc)
    start = time.perf_counter()
    try:
        for step in range(cfg.steps):
            lr = lr_at(step, cfg)
            for group in optimizer.param_groups:
                group["lr"] = lr
            idx = order.micro_batch(step)
            batch = collate([examples[i] for i in idx], idx, pad_id).to(device)
            loss = lora_loss(base, scaled(params, shape.scaling), targets, batch)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(leaves, cfg.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
            tokens += batch.n_tokens
            target_tokens += int((batch.labels != IGNORE).sum())
            if bar is not None:
                rate = tokens / max(time.perf_counter() - start, 1e-9)
                bar.set_postfix(loss=f"{losses[-1]:.3f}", tok_s=f"{rate:.0f}", lr=f"{lr:.1e}", refresh=False)
                bar.update(1)
    except Exception as exc:
        if _is_oom(exc):
            raise TrainingError(f"out of memory at batch size {cfg.batch_size}: lower --batch-size") from None
        raise
    finally:
        if bar is not None:
            bar.close()
    seconds = time.perf_counter() - start
    factors = {k: (a.detach().cpu(), b.detach().cpu()) for k, (a, b) in scaled(params, shape.scaling).items()}
    lora = LoraWeights(base_model, tuple(targets), factors)
    tail = losses[-max(1, len(losses) // 10):]  # the last tenth: one step's loss is noisy
    metrics = {"steps": cfg.steps, "tokens": tokens, "target_tokens": target_tokens, "seconds": round(seconds, 2),
               "tokens_per_s": round(tokens / max(seconds, 1e-9), 1), "first_loss": losses[0],
               "final_loss": sum(tail) / len(tail), "losses": [round(x, 4) for x in losses]}
    return lora, metrics


def val_losses(loaded: LoadedModel, lora: LoraWeights, examples: Sequence[Example], batch_size: int,
               pad_id: int) -> dict[str, float]:
    """Assistant-token cross-entropy of the base model with and without the LoRA (hypernet.train.evaluate)."""
    device = next(loaded.model.parameters()).device
    out = {"val_loss_base": evaluate(loaded.model, None, None, examples, batch_size, pad_id, device)}
    with apply_lora(loaded.model, lora):
        out["val_loss"] = evaluate(loaded.model, None, None, examples, batch_size, pad_id, device)
    return out


# --- writing ---------------------------------------------------------------------------------------
def _check_out(folder: Path, overwrite: bool) -> None:
    if folder.exists() and not overwrite:
        raise TrainingError(f"{folder} already exists (pass --overwrite to replace it)")
    if folder.exists() and not folder.is_dir():
        raise TrainingError(f"{folder} exists and is not a folder")


def _write_json(path: Path, data: dict[str, Any]) -> None:
    atomic_write(path, (json.dumps(data, indent=2, default=str) + "\n").encode())


def publish(lora: LoraWeights, report: dict[str, Any], folder: Path) -> Path:
    """The PEFT folder plus its report.json, built in a temp folder beside it and renamed into place."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    try:
        built = export_peft(lora, staging / "adapter")
        _write_json(built / REPORT_NAME, report)
        publish_modes(built)  # report.json is written by atomic_write, privately
        if folder.exists():  # --overwrite: the old folder goes only once the new one is complete
            os.replace(folder, staging / "old")
        os.replace(built, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def _options_dict(opts: LoraOptions, cfg: TrainConfig, shape: HypernetConfig) -> dict[str, Any]:
    return {**{k: v for k, v in asdict(opts).items() if k != "progress"}, "steps": cfg.steps,
            "warmup": cfg.warmup, "min_lr": cfg.min_lr, "weight_decay": cfg.weight_decay, "grad_clip": cfg.grad_clip,
            "rank": shape.rank, "alpha": shape.alpha, "target_modules": list(shape.target_modules),
            # wall times mean little without the machine's load (shared CPUs)
            "threads": torch.get_num_threads(), "load_avg_1m": round(os.getloadavg()[0], 2)}


# --- the two baselines -----------------------------------------------------------------------------
def run_multitask(loaded: LoadedModel, data: Path, out: Path, opts: LoraOptions, *, val_data: Path | None = None,
                  overwrite: bool = False) -> dict[str, Any]:
    """One LoRA on the stage-2 samples of every training skill; val loss on held-out skills if given."""
    _check_data_dir(loaded, data)
    train_file = _first_file(data, ("train-stage2.jsonl", "stage2.jsonl"))
    val_file = None
    if val_data is not None:
        _check_data_dir(loaded, val_data)
        val_file = _first_file(val_data, ("heldout-stage2.jsonl",))
    _check_out(out, overwrite)
    samples = read_jsonl(train_file)
    val_samples = read_jsonl(val_file) if val_file else []
    examples = tokenize_samples(loaded, samples, opts.max_tokens)
    val = tokenize_samples(loaded, val_samples, opts.max_tokens)[:opts.max_val_examples]
    cfg, shape, pad = schedule(opts, len(examples)), lora_shape(), _pad_id(loaded)

    lora, metrics = train_lora(loaded.model, examples, pad, cfg, shape, loaded.name, progress=opts.progress,
                               desc="multi-task LoRA")
    report = {"baseline": "multitask-lora", "base_model": loaded.name,
              "data": {"file": str(train_file), "sha256": _sha(train_file), "samples": len(samples),
                       "examples": len(examples), "skills": len({e.skill for e in examples})},
              "options": _options_dict(opts, cfg, shape), **metrics}
    if val:
        report.update(val_losses(loaded, lora, val, opts.batch_size, pad))
        report["val"] = {"file": str(val_file), "sha256": _sha(val_file), "examples": len(val),
                         "skills": len({e.skill for e in val})}
    publish(lora, report, out)
    return report


def run_oracle(loaded: LoadedModel, data: Path, skills: Sequence[str] | None, out: Path, opts: LoraOptions, *,
               overwrite: bool = False) -> dict[str, Any]:
    """One LoRA per skill on that skill's own stage-2 samples (`skills=None`: every skill of the file).

    Each `<out>/<skill>/` is published as soon as it is trained, and `<out>/report.json` gathers the
    reports of every skill in the folder (earlier runs included).
    """
    _check_data_dir(loaded, data)
    data_file = _first_file(data, ("heldout-stage2.jsonl", "train-stage2.jsonl"))
    samples = read_jsonl(data_file)
    known = list(dict.fromkeys(s.skill for s in samples))
    names = list(dict.fromkeys(skills)) if skills is not None else known
    unknown = [n for n in names if n not in known]
    if unknown:
        raise TrainingError(f"no samples for skill(s) {', '.join(unknown)} in {data_file} "
                            f"(it has {len(known)}: {', '.join(known[:5])}{' ...' if len(known) > 5 else ''})")
    if not names:
        raise TrainingError("no skills given (name them with --skill, or pass --all)")
    if out.exists() and not out.is_dir():
        raise TrainingError(f"{out} exists and is not a folder")
    for name in names:
        _check_out(out / name, overwrite)
    shape, pad = lora_shape(), _pad_id(loaded)
    per_skill = {name: tokenize_samples(loaded, [s for s in samples if s.skill == name], opts.max_tokens)
                 for name in names}
    empty = [n for n, ex in per_skill.items() if not ex]
    if empty:
        raise TrainingError(f"skill(s) {', '.join(empty)}: no examples left after truncation to --max-tokens "
                            f"{opts.max_tokens}")

    summary_path = out / REPORT_NAME
    summary = _read_summary(summary_path)
    summary.update(baseline="oracle-lora", base_model=loaded.name, data={"file": str(data_file),
                                                                          "sha256": _sha(data_file)})
    for i, name in enumerate(names, 1):
        start = time.perf_counter()
        examples = per_skill[name]
        cfg = schedule(opts, len(examples))
        lora, metrics = train_lora(loaded.model, examples, pad, cfg, shape, loaded.name, progress=opts.progress,
                                   desc=f"oracle {i}/{len(names)} {name}")
        report = {"baseline": "oracle-lora", "skill": name, "base_model": loaded.name,
                  # samples to trained factors, the base already loaded: what the hypernet's forward pass replaces
                  "seconds_to_adapter": round(time.perf_counter() - start, 2),
                  "data": {"file": str(data_file), "examples": len(examples),
                           "types": sorted({s.type for s in samples if s.skill == name and s.type})},
                  "options": _options_dict(opts, cfg, shape), **metrics}
        publish(lora, report, out / name)
        summary.setdefault("skills", {})[name] = {k: v for k, v in report.items() if k != "losses"}
        _write_json(summary_path, summary)
    return summary


def _read_summary(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # rebuilt from this run's skills
    return data if isinstance(data, dict) else {}


def _pad_id(loaded: LoadedModel) -> int:
    tok = loaded.tokenizer
    return tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
