"""Training the hypernetwork through the frozen base model: one loop for all three stages.

    result = train(base, hypernet, data, TrainConfig(stage=1, steps=200), state_path="hn.state.safetensors",
                   identity={"base_model": ..., "tokenizer": ..., "data": ...})

Per step, for each micro-batch: the unique skills of the batch go through the hypernetwork (their
frozen encoder states are cached), each row gets its own skill's LoRA through batched forward hooks,
and the loss is cross-entropy on assistant tokens (plus, in stage 1, top-k context distillation
from the base model with the skill in context). Only the hypernetwork has gradients.

Accelerate places tensors, wraps the hypernetwork for multi-GPU (`accelerate launch` / `torchrun`),
and runs bf16 autocast where the GPU supports it. The run is exactly resumable: the state file
holds weights, optimizer, step and RNG states, and the data order is a pure function of the step.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .batching import IGNORE, Batch, DataOrder, Example, SkillBank, collate
from .hypernetwork import Hypernetwork
from .inject import apply_lora
from .progress import Bar
from .trainstate import TrainingError, TrainState, capture_rng, load_state, restore_rng, save_state

__all__ = ["TrainConfig", "TrainData", "TrainResult", "TrainingError", "evaluate", "lm_loss", "lr_at",
           "make_accelerator", "topk_kd_loss", "train"]


@dataclass(frozen=True)
class TrainConfig:
    stage: int = 1
    steps: int = 100
    batch_size: int = 4  # per device, per micro-batch
    grad_accum: int = 1
    lr: float = 1e-4  # the heads fan out 512 → thousands of LoRA entries: 1e-3 diverged on SmolLM2
    min_lr: float = 1e-5  # the cosine ends here
    warmup: int = 10  # steps of linear warm-up
    weight_decay: float = 0.01
    beta2: float = 0.95
    grad_clip: float = 1.0
    ce_weight: float = 1.0
    kd_weight: float = 0.0  # top-k context distillation (stage 1)
    kd_top_k: int = 16
    seed: int = 0
    mixed_precision: str = "auto"  # auto (bf16 on a GPU that has it) | no | bf16 | fp16
    # --- bookkeeping only: may change between a run and its resume ---
    eval_every: int = 0  # 0: validate at the end only
    save_every: int = 50
    max_val_examples: int = 64
    log_every: int = 1

    def __post_init__(self) -> None:
        if self.stage not in (1, 2, 3):
            raise TrainingError(f"stage must be 1, 2 or 3, got {self.stage!r}")
        for name in ("steps", "batch_size", "grad_accum", "kd_top_k", "log_every"):
            if getattr(self, name) < 1:
                raise TrainingError(f"{name} must be at least 1, got {getattr(self, name)!r}")
        if not self.lr > 0 or self.min_lr < 0 or self.warmup < 0 or self.eval_every < 0 or self.save_every < 0:
            raise TrainingError("lr must be > 0; min_lr, warmup, eval_every and save_every must be >= 0")
        if self.ce_weight < 0 or self.kd_weight < 0 or self.ce_weight + self.kd_weight == 0:
            raise TrainingError("ce_weight and kd_weight must be >= 0 and not both zero")
        if self.mixed_precision not in ("auto", "no", "bf16", "fp16"):
            raise TrainingError(f"mixed_precision must be auto, no, bf16 or fp16, got {self.mixed_precision!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def resume_fields(self) -> dict[str, Any]:
        """The settings a resumed run must share with the run it continues (the rest is bookkeeping)."""
        skip = {"eval_every", "save_every", "max_val_examples", "log_every"}
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in skip}


@dataclass
class TrainData:
    skills: dict[str, Sequence[int]]  # skill key -> token ids of the text the hypernetwork reads
    train: list[Example]
    val: list[Example] = field(default_factory=list)
    pad_id: int = 0

    def __post_init__(self) -> None:
        if not self.train:
            raise TrainingError("no training examples")
        for e in [*self.train, *self.val]:
            if e.skill not in self.skills:
                raise TrainingError(f"an example names skill {e.skill!r}, which has no text")
            if e.n_targets == 0:
                raise TrainingError("an example has no assistant tokens to learn")


@dataclass
class TrainResult:
    hypernet: Hypernetwork  # unwrapped, on the training device
    step: int
    finished: bool  # step == config.steps
    history: list[dict[str, Any]]
    metrics: dict[str, Any]


# --- schedule and losses ---------------------------------------------------------------------------
def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up to cfg.lr, then cosine down to cfg.min_lr at the last step."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / (cfg.warmup + 1)
    span = max(1, cfg.steps - cfg.warmup - 1)
    progress = min(1.0, (step - cfg.warmup) / span)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * progress))


def target_logits(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """The logits that predict each labelled token, row by row: (N, V) and the N targets."""
    keep = labels[:, 1:] != IGNORE
    return logits[:, :-1][keep], labels[:, 1:][keep]


def lm_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean cross-entropy over the assistant tokens only."""
    sel, targets = target_logits(logits, labels)
    return F.cross_entropy(sel.float(), targets)


def _log1mexp(x: Tensor) -> Tensor:
    """log(1 - exp(x)) for x <= 0, accurate at both ends."""
    x = x.clamp(max=-1e-7)
    return torch.where(x > -0.6931, torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def topk_kd_loss(student: Tensor, teacher_logp: Tensor, teacher_idx: Tensor) -> Tensor:
    """KL(teacher ‖ student) over the teacher's top-k tokens plus one bucket for all the rest.

    student (N, V) logits; teacher_logp/idx (N, k): the teacher's top-k log-probabilities and token
    ids. The tail bucket keeps the student from hiding mass outside the top k, and makes the loss
    exactly zero when the student's distribution is the teacher's.
    """
    s_top = F.log_softmax(student.float(), dim=-1).gather(-1, teacher_idx)
    t_top = teacher_logp.float()
    t_tail, s_tail = _log1mexp(t_top.logsumexp(-1)), _log1mexp(s_top.logsumexp(-1))
    kl = (t_top.exp() * (t_top - s_top)).sum(-1) + t_tail.exp() * (t_tail - s_tail)
    return kl.mean()


# --- the model side of a step ----------------------------------------------------------------------
def student_logits(base: nn.Module, hn: nn.Module, targets, batch: Batch, bank: SkillBank) -> Tensor:
    """Base-model logits with each row's skill LoRA applied through hooks (differentiable in hn)."""
    states, mask, chunks = bank.batch(batch.skills)
    factors = hn(states, mask, chunks)  # one adapter per unique skill of the batch
    factors = {k: (a[batch.rows], b[batch.rows]) for k, (a, b) in factors.items()}  # one per row
    with apply_lora(base, factors, targets=targets):
        return base(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False).logits


class TeacherCache:
    """Top-k log-probabilities of the base model with the skill in context, at each assistant token.

    The base is frozen, so each example's teacher pass runs once per run and is kept (k floats + k ids
    per token). The skill's system block, shared by all examples of a skill, runs once per skill and
    its KV cache serves each example's remainder. Must run with no LoRA applied.
    """

    def __init__(self, base: nn.Module, examples: Sequence[Example], k: int):
        self.base, self.examples, self.k = base, examples, k
        self._cache: dict[int, tuple[Tensor, Tensor]] = {}

    def _topk(self, logits: Tensor, labels: Sequence[int], device: torch.device) -> tuple[Tensor, Tensor]:
        sel, _ = target_logits(logits, torch.tensor([labels], device=device))
        return F.log_softmax(sel.float(), dim=-1).topk(min(self.k, sel.shape[-1]), dim=-1)

    @torch.no_grad()
    def fill(self, indices: Sequence[int], device: torch.device, show: bool = False) -> None:
        """Compute the teacher targets of `indices`, grouped by shared prefix. One example per forward:
        no padding, so a target never depends on which examples it was computed with."""
        groups: dict[tuple[int, ...], list[int]] = {}
        for i in dict.fromkeys(indices):
            if i in self._cache:
                continue
            e = self.examples[i]
            if e.teacher_ids is None or e.teacher_labels is None:
                raise TrainingError("context distillation needs teacher sequences (the skill in context) in the data")
            p = e.teacher_prefix if e.teacher_labels[e.teacher_prefix:e.teacher_prefix + 1] == (IGNORE,) else 0
            groups.setdefault(e.teacher_ids[:p], []).append(i)
        items = groups.items()
        bar = Bar(len(groups), "teacher (skill in context)", leave=False) if show and groups else None
        # transformers renamed `past_key_values` to `cache` (5.x); speak whichever this model takes
        params = inspect.signature(self.base.forward).parameters
        name = "cache" if "cache" in params else "past_key_values"
        keep = {"logits_to_keep": 1} if "logits_to_keep" in params else {}  # the prefix needs no logits
        try:
            for prefix, members in items:
                past = None
                if prefix:
                    out = self.base(input_ids=torch.tensor([prefix], device=device), use_cache=True, **keep)
                    past = out[name]
                for i in members:
                    e, p = self.examples[i], len(prefix)
                    ids = torch.tensor([e.teacher_ids[p:]], device=device)
                    extra = {name: copy.deepcopy(past), "use_cache": True} if past is not None else {"use_cache": False}
                    logits = self.base(input_ids=ids, **extra).logits
                    # logits[j] predicts token p+j+1, so the suffix's own labels line up after the shift
                    self._cache[i] = self._topk(logits, e.teacher_labels[p:], device)
                if bar is not None:
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()

    def get(self, indices: list[int], device: torch.device) -> tuple[Tensor, Tensor]:
        self.fill(indices, device)
        return (torch.cat([self._cache[i][0] for i in indices]).to(device),
                torch.cat([self._cache[i][1] for i in indices]).to(device))


def compute_loss(base: nn.Module, hn: nn.Module, targets, batch: Batch, bank: SkillBank,
                 teacher: TeacherCache | None, cfg: TrainConfig) -> tuple[Tensor, dict[str, float]]:
    t_logp = t_idx = None
    if teacher is not None:  # before the hooks go in: the teacher is the plain base model
        t_logp, t_idx = teacher.get(batch.examples, batch.input_ids.device)
    logits = student_logits(base, hn, targets, batch, bank)
    sel, tgt = target_logits(logits, batch.labels)
    ce = F.cross_entropy(sel.float(), tgt)
    loss, parts = cfg.ce_weight * ce, {"ce": ce.item()}
    if teacher is not None:
        if t_logp.shape[0] != sel.shape[0]:
            raise TrainingError("teacher and student sequences label different numbers of assistant tokens")
        kd = topk_kd_loss(sel, t_logp, t_idx)
        loss = loss + cfg.kd_weight * kd
        parts["kd"] = kd.item()
    return loss, parts


@torch.no_grad()
def evaluate(base: nn.Module, hn: Hypernetwork | None, bank: SkillBank | None, examples: Sequence[Example],
             batch_size: int, pad_id: int, device: torch.device, in_context: bool = False) -> float:
    """Token-weighted mean cross-entropy on the assistant tokens of `examples`.

    hn=None: the plain base model (the no-skill baseline); in_context: the base model reading the
    teacher sequences (the skill in its prompt: in-context learning).
    """
    total, count = 0.0, 0
    for start in range(0, len(examples), batch_size):
        chunk = examples[start:start + batch_size]
        if in_context:
            chunk = [Example(e.skill, e.teacher_ids, e.teacher_labels) for e in chunk]
        batch = collate(chunk, range(len(chunk)), pad_id).to(device)
        if hn is None:
            logits = base(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False).logits
        else:
            logits = student_logits(base, hn, hn.targets, batch, bank)
        sel, tgt = target_logits(logits, batch.labels)
        total += F.cross_entropy(sel.float(), tgt, reduction="sum").item()
        count += tgt.numel()
    return total / max(count, 1)


# --- accelerate ------------------------------------------------------------------------------------
def make_accelerator(mixed_precision: str = "auto"):
    from accelerate import Accelerator

    if mixed_precision == "auto":
        mixed_precision = "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
    # cpu=True without a GPU: `torchrun`/`accelerate launch` then run CPU processes as one DDP job (gloo)
    return Accelerator(mixed_precision=mixed_precision, cpu=not torch.cuda.is_available())


def _is_oom(exc: BaseException) -> bool:
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text
                                              or "not enough memory" in text)


# --- the loop --------------------------------------------------------------------------------------
def _state_header(hn: Hypernetwork, cfg: TrainConfig, identity: dict[str, Any], history: list, totals: dict) -> dict:
    return {"hypernet": {"config": hn.config.to_dict(), "base_model": hn.base_model_id,
                         "targets": [t.to_dict() for t in hn.targets]},
            "identity": identity, "train": cfg.to_dict(), "history": history, "totals": totals}


def _check_resumable(state: TrainState, hn: Hypernetwork, cfg: TrainConfig, identity: dict[str, Any]) -> None:
    """A resume continues the same run or nothing: same base, tokenizer, data, hypernet and settings."""
    head = state.header
    saved_hn = head.get("hypernet", {})
    if saved_hn.get("base_model") != hn.base_model_id:
        raise TrainingError(f"the training state is for base model {saved_hn.get('base_model')!r}, "
                            f"not {hn.base_model_id!r}")
    for key, value in identity.items():
        if head.get("identity", {}).get(key) != value:
            raise TrainingError(f"cannot resume: the {key} differs from the interrupted run's "
                                f"({head.get('identity', {}).get(key)!r} != {value!r})")
    if saved_hn.get("config") != hn.config.to_dict() or saved_hn.get("targets") != [t.to_dict() for t in hn.targets]:
        raise TrainingError("cannot resume: the hypernetwork's config or targets differ from the interrupted run's")
    try:
        saved = TrainConfig(**head.get("train", {})).resume_fields()
    except TypeError as e:
        raise TrainingError(f"the training state's settings are unreadable: {e}") from None
    changed = {k: (saved[k], v) for k, v in cfg.resume_fields().items() if saved.get(k) != v}
    if changed:
        raise TrainingError("cannot resume with different settings: "
                            + ", ".join(f"{k} {old!r} -> {new!r}" for k, (old, new) in changed.items()))


def train(base: nn.Module, hypernet: Hypernetwork, data: TrainData, cfg: TrainConfig, *,
          state_path: str | Path | None = None, identity: dict[str, Any] | None = None, resume: bool = False,
          stop_at: int | None = None, progress: bool = True, accelerator=None,
          on_log: Callable[[dict[str, Any]], None] | None = None,
          skill_states: dict[str, tuple[Tensor, Tensor]] | None = None) -> TrainResult:
    """Train `hypernet` (in place) for cfg.steps optimizer steps; `stop_at` ends early (as a crash would).

    With `resume` and an existing `state_path`, continue from it exactly; every `save_every` steps and
    at the end the state is written there atomically. `skill_states`: a dict shared by the stages of
    one run, so each skill goes through the frozen base once per run.
    """
    identity = dict(identity or {})
    acc = accelerator or make_accelerator(cfg.mixed_precision)
    device = acc.device
    for p in base.parameters():
        p.requires_grad_(False)
    base.to(device).eval()
    hypernet.check_base(base)
    vocab = base.get_input_embeddings().num_embeddings
    if max(max(e.input_ids) for e in data.train) >= vocab:
        raise TrainingError(f"token ids beyond the base model's vocabulary ({vocab}): the data was tokenised "
                            "for another model")

    state = None
    if resume and state_path is not None and Path(state_path).is_file():
        state = load_state(state_path)
        _check_resumable(state, hypernet, cfg, identity)
        try:
            hypernet.load_state_dict(state.model, strict=True)
        except RuntimeError as e:
            raise TrainingError(f"training state weights do not fit the hypernetwork: {e}") from None
    step = state.step if state else 0
    history: list[dict[str, Any]] = list(state.header.get("history", [])) if state else []
    totals = {"tokens": 0, "target_tokens": 0, "seconds": 0.0, "eval_seconds": 0.0, "teacher_seconds": 0.0,
              **(state.header.get("totals", {}) if state else {})}

    torch.manual_seed(cfg.seed)
    hypernet.to(device).train()
    optimizer = torch.optim.AdamW(hypernet.parameters(), lr=cfg.lr, betas=(0.9, cfg.beta2),
                                  weight_decay=cfg.weight_decay)
    model, optimizer = acc.prepare(hypernet, optimizer)
    if state:
        optimizer.load_state_dict(state.optimizer)
        restore_rng(state.rng)
    hn: Hypernetwork = acc.unwrap_model(model)
    bank = SkillBank(base, hn, data.skills, skill_states)
    teacher = TeacherCache(base, data.train, cfg.kd_top_k) if cfg.kd_weight > 0 else None
    order = DataOrder([len(e.input_ids) for e in data.train], cfg.batch_size, cfg.seed, acc.num_processes,
                      acc.process_index)
    val = data.val[:cfg.max_val_examples][acc.process_index::acc.num_processes]

    def validate() -> float | None:
        if not val:
            return None
        t = time.perf_counter()
        hn.eval()
        loss = evaluate(base, hn, bank, val, cfg.batch_size, data.pad_id, device)
        hn.train()
        totals["eval_seconds"] += time.perf_counter() - t
        return _mean_across(acc, loss, len(val))

    def save(at_step: int) -> None:
        if state_path is not None and acc.is_main_process:
            save_state(TrainState(at_step, dict(hn.state_dict()), optimizer.state_dict(), capture_rng(),
                                  _state_header(hn, cfg, identity, history, totals)), state_path)
        acc.wait_for_everyone()

    last = min(cfg.steps, stop_at) if stop_at is not None else cfg.steps
    bar = None
    try:
        if teacher is not None:  # the teacher pass for every example this run will meet, up front
            t = time.perf_counter()
            upcoming = [i for k in range(step * cfg.grad_accum, last * cfg.grad_accum) for i in order.micro_batch(k)]
            with acc.autocast():
                teacher.fill(upcoming, device, show=progress and acc.is_main_process)
            totals["teacher_seconds"] += time.perf_counter() - t
        bar = _progress(progress and acc.is_main_process, cfg.steps, step, cfg.stage)
        t_start, t_run, tokens_run = time.perf_counter() - totals["seconds"], time.perf_counter(), totals["tokens"]
        while step < last:
            lr = lr_at(step, cfg)
            for group in optimizer.param_groups:
                group["lr"] = lr
            parts_sum: dict[str, float] = {}
            loss_sum, n_tok, n_tgt = 0.0, 0, 0
            for micro in range(cfg.grad_accum):
                idx = order.micro_batch(step * cfg.grad_accum + micro)
                batch = collate([data.train[i] for i in idx], idx, data.pad_id).to(device)
                # DDP: all-reduce the gradients once, on the last micro-batch of the step
                sync = contextlib.nullcontext() if micro == cfg.grad_accum - 1 else acc.no_sync(model)
                with sync:
                    with acc.autocast():
                        loss, parts = compute_loss(base, model, hn.targets, batch, bank, teacher, cfg)
                    acc.backward(loss / cfg.grad_accum)
                loss_sum += loss.item() / cfg.grad_accum
                for k, v in parts.items():
                    parts_sum[k] = parts_sum.get(k, 0.0) + v / cfg.grad_accum
                n_tok += batch.n_tokens
                n_tgt += int((batch.labels != IGNORE).sum())
            if cfg.grad_clip > 0:
                acc.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            totals["tokens"] += n_tok * acc.num_processes
            totals["target_tokens"] += n_tgt * acc.num_processes
            record = {"stage": cfg.stage, "step": step, "loss": loss_sum, **parts_sum, "lr": lr,
                      "tokens": totals["tokens"]}
            if cfg.eval_every and step % cfg.eval_every == 0 and step < cfg.steps:
                record["val_loss"] = validate()
            totals["seconds"] = time.perf_counter() - t_start
            record["seconds"] = round(totals["seconds"], 3)
            history.append(record)
            if bar is not None:
                rate = (totals["tokens"] - tokens_run) / max(time.perf_counter() - t_run, 1e-9)
                bar.set_postfix(loss=f"{loss_sum:.3f}", tok_s=f"{rate:.0f}", lr=f"{lr:.1e}", refresh=False)
                bar.update(1)
            if on_log is not None and (step % cfg.log_every == 0 or "val_loss" in record):
                on_log(record)
            if (cfg.save_every and step % cfg.save_every == 0) or step == last:
                save(step)
        if bar is not None:
            bar.close()
        finished = step >= cfg.steps
        metrics = _metrics(cfg, step, history, totals)
        if finished:
            metrics.update(_final_validation(acc, base, hn, bank, val, validate, cfg, data.pad_id))
            metrics["val_examples"] = len(data.val[:cfg.max_val_examples])
            if history and metrics["val_loss"] is not None:
                history[-1]["val_loss"] = metrics["val_loss"]
        metrics["skills_encoded"] = bank.encoded  # through the frozen base in this stage, validation included
    except Exception as exc:
        if _is_oom(exc):
            raise TrainingError(f"out of memory at batch size {cfg.batch_size}: lower --batch-size (raise "
                                f"--grad-accum to keep the effective batch); the last saved state is intact") from None
        raise
    finally:
        if bar is not None:
            bar.close()
    hn.eval()
    return TrainResult(hn, step, finished, history, metrics)


def _metrics(cfg: TrainConfig, step: int, history: list[dict[str, Any]], totals: dict[str, float]) -> dict[str, Any]:
    train_s = max(totals["seconds"] - totals["eval_seconds"], 1e-9)  # tokens/s of training alone
    metrics: dict[str, Any] = {"stage": cfg.stage, "steps": step, "tokens": totals["tokens"],
                               "target_tokens": totals["target_tokens"], "seconds": round(totals["seconds"], 2),
                               "eval_seconds": round(totals["eval_seconds"], 2),
                               "teacher_seconds": round(totals["teacher_seconds"], 2),
                               "tokens_per_s": round(totals["tokens"] / train_s, 1)}
    losses = [h["loss"] for h in history]
    if losses:
        tail = losses[-max(1, len(losses) // 10):]  # the last tenth: one step's loss is noisy
        metrics.update(first_loss=losses[0], train_loss=sum(tail) / len(tail))
    return metrics


def _final_validation(acc, base: nn.Module, hn: Hypernetwork, bank: SkillBank, val: list[Example],
                      validate: Callable[[], float | None], cfg: TrainConfig, pad_id: int) -> dict[str, Any]:
    """Validation loss on held-out skills, beside its baselines: the plain base model (no skill), the
    hypernet fed the wrong skill's text (does it read the skill?) and the skill in context (ICL)."""
    out: dict[str, Any] = {"val_loss": validate()}
    if not val:
        return out

    def mean(examples: list[Example], net: Hypernetwork | None, in_context: bool = False) -> float:
        loss = evaluate(base, net, bank, examples, cfg.batch_size, pad_id, acc.device, in_context=in_context)
        return _mean_across(acc, loss, len(examples))

    hn.eval()
    out["val_loss_base"] = mean(val, None)
    control = shuffled_skills(val)
    if control is not None:
        out["val_loss_shuffled"] = mean(control, hn)
    if all(e.teacher_ids is not None for e in val):
        out["val_loss_icl"] = mean(val, None, in_context=True)
    return out


def shuffled_skills(examples: Sequence[Example]) -> list[Example] | None:
    """The examples with every skill swapped for the next one (sorted by key): a wrong-skill control."""
    keys = sorted({e.skill for e in examples})
    if len(keys) < 2:
        return None
    nxt = {k: keys[(i + 1) % len(keys)] for i, k in enumerate(keys)}
    return [Example(nxt[e.skill], e.input_ids, e.labels, e.teacher_ids, e.teacher_labels) for e in examples]


def _mean_across(acc, value: float, n: int) -> float:
    """Example-weighted mean of a per-process value over all processes (identity on one process)."""
    if acc.num_processes == 1:
        return value
    t = torch.tensor([value * n, float(n)], device=acc.device)
    t = acc.reduce(t, reduction="sum")
    return (t[0] / t[1].clamp_min(1)).item()


def _progress(enabled: bool, total: int, initial: int, stage: int) -> Bar | None:
    return Bar(total, f"stage {stage}", initial=initial) if enabled else None
