"""The policy adapter: one plain LoRA trained on verified multi-turn trajectories (agent/synth/policy.py),
so that the embedded model acts through the agent's interface: read the failure, read the code, edit the
line, rerun the tests, submit.

Unlike the hypernetwork's adapters (q/v, rank 8) it covers every linear layer of the blocks: imitating a
whole way of working needs more than a skill's nudge. It is applied beneath the run's skill adapters
(`agent solve --policy`, on by default for the embedded model) rather than folded into the EMA, whose
targets are the hypernetwork's. The loss is on assistant tokens only; tokenisation, batching, schedule
and the PEFT export are the baselines' (agent/learn/baselines.py). On a GPU the same command uses CUDA
and bf16 (agent/runtime/base_model.py picks them).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from agent.learn.baselines import (LoraOptions, _check_out, _options_dict, _pad_id, _sha, publish, schedule,
                                   tokenize_samples, train_lora, val_losses)
from agent.learn.hypernet_runs import read_jsonl
from agent.runtime.base_model import LoadedModel
from hypernet.config import HypernetConfig, HypernetError
from hypernet.peft_io import WEIGHTS_NAME, import_peft, model_targets
from hypernet.trainstate import TrainingError

ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
SHIPPED_NAME = "policy-smollm2-135m"


def policy_shape(rank: int = 16, alpha: float = 32.0, targets: tuple[str, ...] = ALL_LINEAR) -> HypernetConfig:
    return HypernetConfig(rank=rank, alpha=alpha, target_modules=targets)


def train_policy(loaded: LoadedModel, data: Path, out: Path, opts: LoraOptions, *, rank: int = 16,
                 alpha: float = 32.0, targets: tuple[str, ...] = ALL_LINEAR, val_fraction: float = 0.05,
                 overwrite: bool = False, init: Path | None = None) -> dict[str, Any]:
    """Train the policy LoRA on a `*-policy.jsonl` file; held-out validation is a seeded slice of its
    *tasks* (every route of a task goes to one side), reported as CE with and without the adapter.
    With `init` (a policy PEFT folder) training continues from it: a short fine-tune on new trajectories
    fits a CPU where a run from zero does not."""
    if not data.is_file():
        raise TrainingError(f"--data {data}: no such file (make it with `agent data policy`)")
    _check_out(out, overwrite)
    start = None
    if init is not None:
        try:
            start = import_peft(init, loaded.name, model_targets(loaded.model))
        except HypernetError as exc:
            raise TrainingError(f"--init {init}: {exc}") from None
    samples = read_jsonl(data)
    rows = [json.loads(line) for line in data.read_text(encoding="utf-8").splitlines() if line.strip()]
    task_of = [r.get("task_id", str(i)) for i, r in enumerate(rows)]
    tasks = sorted(set(task_of))
    random.Random(opts.seed).shuffle(tasks)
    held = set(tasks[:max(1, int(len(tasks) * val_fraction))]) if val_fraction > 0 else set()
    train = [s for s, t in zip(samples, task_of) if t not in held]
    val = [s for s, t in zip(samples, task_of) if t in held]
    examples = tokenize_samples(loaded, train, opts.max_tokens)
    val_ex = tokenize_samples(loaded, val, opts.max_tokens)[:opts.max_val_examples]
    shape = policy_shape(rank, alpha, targets)
    cfg, pad = schedule(opts, len(examples)), _pad_id(loaded)
    lora, metrics = train_lora(loaded.model, examples, pad, cfg, shape, loaded.name, progress=opts.progress,
                               desc="policy LoRA", init=start)
    report = {"adapter": "policy", "base_model": loaded.name, "device": str(loaded.device),
              "dtype": str(loaded.dtype).removeprefix("torch."),
              "data": {"file": str(data), "sha256": _sha(data), "samples": len(samples), "train": len(train),
                       "examples": len(examples), "val_tasks": len(held), "tasks": len(tasks)},
              "init": None if init is None else {"folder": str(init), "sha256": _sha(init / WEIGHTS_NAME)},
              "options": _options_dict(opts, cfg, shape), **metrics}
    if val_ex:
        report.update(val_losses(loaded, lora, val_ex, opts.batch_size, pad))
    publish(lora, report, out)
    return report

