"""One self-evolution cycle and its jobs: extract → accumulate → retrain (gated) → compact.

`EvolveContext` carries the store, the settings and every dependency a job needs, each injectable (tests
pass fakes: verifier, writer, embedder, converter, trainer, evaluator); the defaults load the local model
and the hypernetwork lazily, once per process. `run_job` wraps a job in an EvolutionRun row; the jobs
themselves claim and mark their work items in the transactions that write the results.

Retrain: `retrain_fn` fine-tunes the hypernetwork on the verified trajectories and extracted skills newer
than the last retrain and returns a checkpoint file; it is registered as a "candidate" and then gated: the
current hypernetwork and the candidate are evaluated on held-out skills, both results become EvalResult
rows, and the candidate is accepted only if its score is not worse (within `gate_tolerance`). A candidate
left by a crash is gated by the next run instead of training again.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

from sqlalchemy import select

from memory import evolution as evo_repo
from memory import skills as skill_repo
from memory.db import Store
from memory.models import EvalResult, HypernetCheckpoint

log = logging.getLogger(__name__)

JOB_NAMES = ("extract", "accumulate", "retrain", "compact")
# β of the EMA, from bench/bench_forgetting.py: the best balance of keeping the newest skill and the
# recent library in the adapter-space proxy (see bench/results/forgetting_*.json).
DEFAULT_BETA = 0.8
WRITERS = ("auto", "template", "local", "endpoint")


class SettingsError(ValueError):
    """A bad evolution setting (config file or flag)."""


class TrainingUnavailable(RuntimeError):
    """No hypernetwork trainer (or evaluator) in this installation: retrain is skipped, not failed."""


@dataclass
class EvolveSettings:
    beta: float = DEFAULT_BETA
    max_rank: int = 64
    sources: tuple[str, ...] = ("extracted",)  # which skills are folded into the persistent adapter
    writer: str = "auto"  # auto: endpoint if configured, else the local model; template: no model
    endpoint: str | None = None
    endpoint_model: str | None = None
    endpoint_key_env: str = "OPENAI_API_KEY"
    agree_threshold: float = 0.92  # embedding similarity at or above: the same skill (AGREE)
    edit_threshold: float = 0.85  # at or above (and below agree): a variant of it (EDIT)
    batch: int = 10
    allow_unconfined: bool = False  # verification runs outside bubblewrap only if asked
    verify_timeout: float = 300.0
    retrain_min_new: int = 1  # new verified trajectories + new skills needed before a retrain
    retrain_max_tokens: int = 2048  # a trajectory sample is longer than a single-turn one
    gate_tolerance: float = 0.0
    gate_skills: int = 2  # held-out skills per subtask in the default gate evaluation
    keep_last: int = 20  # EMA versions that keep their weights through compaction (0: never prune)
    checkpoint_dir: str | None = None

    def validate(self) -> EvolveSettings:
        if not (0.0 <= self.beta < 1.0):
            raise SettingsError(f"beta must be in [0, 1), got {self.beta}")
        if self.max_rank < 1:
            raise SettingsError(f"max_rank must be at least 1, got {self.max_rank}")
        if self.writer not in WRITERS:
            raise SettingsError(f"unknown writer {self.writer!r} (one of {', '.join(WRITERS)})")
        if self.writer == "endpoint" and not (self.endpoint and self.endpoint_model):
            raise SettingsError("writer 'endpoint' needs endpoint and endpoint_model")
        if not (0.0 < self.edit_threshold <= self.agree_threshold <= 1.0):
            raise SettingsError("need 0 < edit_threshold <= agree_threshold <= 1")
        if self.batch < 1 or self.keep_last < 0 or self.retrain_min_new < 0 or self.gate_skills < 1 or \
                self.retrain_max_tokens < 64:
            raise SettingsError("batch and gate_skills must be >= 1; keep_last and retrain_min_new >= 0; "
                                "retrain_max_tokens >= 64")
        unknown = set(self.sources) - set(skill_repo.SOURCES)
        if unknown or not self.sources:
            raise SettingsError(f"sources must be some of {', '.join(skill_repo.SOURCES)}")
        return self

    @classmethod
    def from_mapping(cls, data: dict[str, Any], where: str = "settings") -> EvolveSettings:
        defaults = cls()
        known = {f.name for f in fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            name = key.replace("-", "_")
            if name not in known:
                raise SettingsError(f"unknown setting {key!r} in {where} (known: {', '.join(sorted(known))})")
            kwargs[name] = _coerce(key, getattr(defaults, name), value, where)
        return cls(**kwargs).validate()


def _coerce(key: str, default: Any, value: Any, where: str) -> Any:
    """A config value of the default's type (TOML/YAML give ints for floats, lists for tuples)."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = number and float(value).is_integer()
        value = int(value) if ok else value
    elif isinstance(default, float):
        ok = number
        value = float(value) if ok else value
    elif isinstance(default, tuple):
        value = [value] if isinstance(value, str) else value
        ok = isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)
        value = tuple(value) if ok else value
    else:
        ok = value is None or isinstance(value, str)
    if not ok:
        kind = "list of strings" if isinstance(default, tuple) else type(default).__name__ if default is not None else "string"
        raise SettingsError(f"setting {key!r} in {where}: {value!r} is not a {kind}")
    return value


@dataclass(frozen=True)
class RetrainRequest:
    base_model: str
    parent_id: int | None  # the accepted checkpoint to start from (None: shipped or fresh)
    parent_path: str | None
    trajectory_ids: list[int]  # verified trajectories newer than the last retrain
    skill_ids: list[int]  # active extracted skills newer than the last retrain
    out_dir: Path


@dataclass(frozen=True)
class TrainedCandidate:
    path: str  # the checkpoint file (safetensors), already fully written
    name: str
    stage: str | None = "evolve"
    config: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class GateScore:
    metric: str
    value: float  # higher is better
    n: int
    details: dict[str, Any] = field(default_factory=dict)


Verifier = Callable[[Any], Any]
Writer = Callable[["EvolveContext"], "tuple[Any, str] | None"]
Converter = Callable[["EvolveContext", Any, int], Any]
Trainer = Callable[["EvolveContext", RetrainRequest], TrainedCandidate]
Evaluator = Callable[["EvolveContext", "HypernetCheckpoint | None"], GateScore]


@dataclass
class EvolveContext:
    store: Store
    settings: EvolveSettings = field(default_factory=EvolveSettings)
    model_name: str = "smollm2-135m-instruct"
    hypernet_path: str | None = None
    verifier: Verifier | None = None
    writer_factory: Writer | None = None
    embedder: Callable[[list[str]], Any] | None = None
    converter: Converter | None = None
    retrain_fn: Trainer | None = None
    evaluator: Evaluator | None = None
    fault_hook: Callable[[str], None] | None = None  # test seam: called at named points inside the jobs
    stop_event: threading.Event = field(default_factory=threading.Event)
    model_lock: Any = field(default_factory=threading.RLock)  # the base model is shared with queued solves
    _loaded: Any = None
    _handle: Any = None
    _writer: Any = None

    # --- plumbing -------------------------------------------------------------------------------
    def stopping(self) -> bool:
        return self.stop_event.is_set()

    def fault(self, point: str) -> None:
        if self.fault_hook is not None:
            self.fault_hook(point)

    @property
    def base_model(self) -> str:
        return self._loaded.name if self._loaded is not None else self.model_name

    @property
    def checkpoint_dir(self) -> Path:
        if self.settings.checkpoint_dir:
            return Path(self.settings.checkpoint_dir)
        from agent.runtime.base_model import agent_home

        return agent_home() / "checkpoints"

    def loaded(self):
        with self.model_lock:
            if self._loaded is None:
                from agent.runtime.base_model import load_model

                self._loaded = load_model(self.model_name)
            return self._loaded

    def handle(self):
        """The hypernetwork: --hypernet, else the newest accepted checkpoint in the store, else shipped/fresh."""
        with self.model_lock:
            if self._handle is None:
                from agent.runtime.hypernet_loader import load

                path = self.hypernet_path
                if path is None:
                    with self.store.session() as s:
                        row = evo_repo.latest_accepted(s, self.base_model)
                        if row is not None and row.path and Path(row.path).is_file():
                            path = row.path
                self._handle = load(self.loaded(), self.store, path)
            return self._handle

    def reset_handle(self) -> None:
        with self.model_lock:
            self._handle = None

    # --- the dependencies jobs call ----------------------------------------------------------------
    def verify(self, view):
        if self.verifier is not None:
            return self.verifier(view)
        from agent.evolve.extract import verify_in_sandbox

        return verify_in_sandbox(view, self.settings.allow_unconfined, self.settings.verify_timeout)

    def writer(self):
        """(chat, origin) for the skill writer, or None for the template only."""
        if self.writer_factory is not None:
            return self.writer_factory(self)
        st = self.settings
        if st.writer == "template":
            return None
        if self._writer is None:
            if st.writer == "endpoint" or (st.writer == "auto" and st.endpoint and st.endpoint_model):
                from agent.runtime.backends import EndpointChat

                self._writer = (EndpointChat(st.endpoint, st.endpoint_model, key_env=st.endpoint_key_env), "teacher")
            else:
                from agent.runtime.backends import LocalChat

                loaded = self.loaded()
                self._writer = (LocalChat(loaded.model, loaded.tokenizer, max_new_tokens=400,
                                          stop_after_block=False), "model")
        return self._writer

    def embed(self, texts: list[str]):
        if self.embedder is not None:
            return self.embedder(texts)
        from agent.runtime.embed import EmbedderError, embed

        try:
            return embed(texts)
        except EmbedderError:
            log.warning("sentence embeddings unavailable: de-duplicating by word overlap")
            self.embedder = lexical_embed
            return lexical_embed(texts)

    def convert(self, doc, skill_id: int):
        from agent.evolve.accumulate import Converted

        if self.converter is not None:
            return self.converter(self, doc, skill_id)
        from agent.runtime.skill_adapters import convert_skill

        with self.model_lock:
            handle = self.handle()
            conv = convert_skill(self.store, self.loaded(), handle, doc, skill_id)
        return Converted(conv.lora, conv.adapter_id, handle.checkpoint_id)

    def library(self) -> list[tuple[int, str, str]]:
        with self.store.session() as s:
            return [(r.id, r.name, r.description) for r in skill_repo.list_current(s)]


def lexical_embed(texts: list[str]):
    """Unit-norm hashed bag of words: a dependency-free stand-in for sentence embeddings."""
    import torch

    out = torch.zeros(len(texts), 512)
    for i, text in enumerate(texts):
        for word in re.findall(r"[a-z0-9]+", text.lower()):
            out[i, int(hashlib.md5(word.encode()).hexdigest(), 16) % 512] += 1.0
    return torch.nn.functional.normalize(out, dim=-1)


# --- job runs ------------------------------------------------------------------------------------------

@dataclass
class JobReport:
    name: str
    run_id: int
    status: str  # ok | failed | skipped | stopped
    details: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"job": self.name, "run_id": self.run_id, "status": self.status, "details": self.details}


def job_function(name: str) -> Callable[[EvolveContext], dict[str, Any]]:
    from agent.evolve import accumulate, extract

    table = {"extract": extract.run, "accumulate": accumulate.run, "retrain": retrain, "compact": accumulate.compact}
    if name not in table:
        raise SettingsError(f"unknown job {name!r} (one of {', '.join(JOB_NAMES)})")
    return table[name]


def run_job(ctx: EvolveContext, name: str) -> JobReport:
    """Run one job now, recorded as an EvolutionRun row; failures are reported, not raised."""
    fn = job_function(name)
    with ctx.store.session() as s:
        run_id = evo_repo.start_run(s, name, {"beta": ctx.settings.beta} if name == "accumulate" else {})
    status, details = "ok", {}
    try:
        details = fn(ctx) or {}
        if details.get("skipped"):
            status = "skipped"
        elif details.get("stopped"):
            status = "stopped"
    except TrainingUnavailable as exc:
        status, details = "skipped", {"skipped": str(exc)}
    except BaseException as exc:
        status, details = ("interrupted" if isinstance(exc, KeyboardInterrupt) else "failed",
                           {"error": f"{type(exc).__name__}: {exc}"[:1000]})
        if status == "failed":
            log.exception("job %s failed", name)
        if not isinstance(exc, Exception):
            _finish(ctx, run_id, status, details)
            raise
    _finish(ctx, run_id, status, details)
    return JobReport(name, run_id, status, details)


def _finish(ctx: EvolveContext, run_id: int, status: str, details: dict) -> None:
    with ctx.store.session() as s:
        evo_repo.finish_run(s, run_id, status, details)


@dataclass
class CycleReport:
    run_id: int
    status: str
    steps: list[JobReport]

    def to_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "status": self.status, "steps": [r.to_dict() for r in self.steps]}


def run_cycle(ctx: EvolveContext, skip: tuple[str, ...] = ()) -> CycleReport:
    """extract → accumulate → retrain → compact, now; stops between steps when asked to."""
    bad = set(skip) - set(JOB_NAMES)
    if bad:
        raise SettingsError(f"unknown step {sorted(bad)[0]!r} to skip (steps: {', '.join(JOB_NAMES)})")
    with ctx.store.session() as s:
        run_id = evo_repo.start_run(s, "cycle", {"skip": list(skip)})
    steps: list[JobReport] = []
    try:
        for name in JOB_NAMES:
            if ctx.stopping():
                break
            if name not in skip:
                steps.append(run_job(ctx, name))
    finally:
        status = "stopped" if ctx.stopping() else ("failed" if any(r.status == "failed" for r in steps) else "ok")
        _finish(ctx, run_id, status, {"steps": {r.name: {"status": r.status, "run_id": r.run_id} for r in steps}})
    return CycleReport(run_id, status, steps)


# --- retrain + gate ----------------------------------------------------------------------------------------

def retrain(ctx: EvolveContext) -> dict[str, Any]:
    base = ctx.base_model
    with ctx.store.session() as s:
        # a candidate of ours left by a crash is gated, not retrained; candidates from `agent hypernet train`
        # (no trained_on) are someone else's to judge
        pending = [c.id for c in evo_repo.candidates(s, base) if (c.config or {}).get("trained_on")]
    out: dict[str, Any] = {"resumed": pending}
    if not pending:
        with ctx.store.session() as s:
            mark = evo_repo.training_watermark(s, base)
            data = evo_repo.new_training_data(s, mark)
            parent = evo_repo.latest_accepted(s, base)
            parent_id, parent_path = (parent.id, parent.path) if parent else (None, None)
        n_new = len(data["trajectory_ids"]) + len(data["skill_ids"])
        if n_new < max(ctx.settings.retrain_min_new, 1):
            return {"skipped": f"no new training data ({n_new} new items, need {ctx.settings.retrain_min_new})"}
        ctx.fault("retrain:train")
        out_dir = ctx.checkpoint_dir
        out_dir.mkdir(parents=True, exist_ok=True)
        trainer = ctx.retrain_fn or default_retrain
        cand = trainer(ctx, RetrainRequest(base, parent_id, parent_path, data["trajectory_ids"], data["skill_ids"],
                                           out_dir))
        ctx.fault("retrain:register")
        pending = [register_candidate(ctx, cand, parent_id, data)]
        out["trained"] = pending[0]
    out["gated"] = [gate(ctx, cid) for cid in pending if not ctx.stopping()]
    if any(g.get("accepted") for g in out["gated"]):
        ctx.reset_handle()  # conversions from now on use the accepted hypernetwork
    return out


def register_candidate(ctx: EvolveContext, cand: TrainedCandidate, parent_id: int | None,
                       data: dict[str, list[int]]) -> int:
    path = Path(cand.path)
    if not path.is_file():
        raise RuntimeError(f"the trainer returned {path}, which does not exist")
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    trained_on = {"trajectory_id": max(data["trajectory_ids"], default=0), "skill_id": max(data["skill_ids"], default=0),
                  "trajectories": len(data["trajectory_ids"]), "skills": len(data["skill_ids"])}
    manifest = hashlib.sha256(repr(sorted(data.items())).encode()).hexdigest()
    with ctx.store.session() as s:
        row = s.scalars(select(HypernetCheckpoint).where(HypernetCheckpoint.sha256 == sha)).first()
        if row is None:  # (a trainer may have registered its file already: then that row is the candidate)
            row = HypernetCheckpoint(name=cand.name, base_model=ctx.base_model, sha256=sha, stage=cand.stage,
                                     parent_id=parent_id, data_manifest_hash=manifest, path=str(path.resolve()))
            s.add(row)
        row.status = "candidate"
        row.config = {**(row.config or {}), **cand.config, "trained_on": trained_on}
        row.metrics = {**(row.metrics or {}), **cand.metrics}
        s.flush()
        return row.id


def gate(ctx: EvolveContext, candidate_id: int) -> dict[str, Any]:
    """Evaluate current vs candidate on held-out skills; keep the candidate only if it is not worse."""
    with ctx.store.session() as s:
        cand = s.get(HypernetCheckpoint, candidate_id)
        s.expunge(cand)
        base = evo_repo.latest_accepted(s, cand.base_model)
        if base is not None:
            s.expunge(base)
    path = Path(cand.path or "")
    if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != cand.sha256:
        verdict, reason = "rejected", "checkpoint file missing or changed since training"
        b = c = None
    else:
        evaluator = ctx.evaluator or default_evaluate
        ctx.fault("retrain:eval")
        b = evaluator(ctx, base)
        c = evaluator(ctx, cand)
        accepted = c.value >= b.value - ctx.settings.gate_tolerance
        verdict = "accepted" if accepted else "rejected"
        reason = f"held-out {c.metric} {c.value:.4g} vs {b.value:.4g} for the current hypernetwork"
    ctx.fault("retrain:before-verdict")
    with ctx.store.session() as s:
        row = s.get(HypernetCheckpoint, candidate_id)
        if row.status != "candidate":
            return {"candidate": candidate_id, "status": row.status, "note": "already gated"}
        run_id = f"gate-{candidate_id}"
        for role, score, hid in (("baseline", b, base.id if base else None), ("candidate", c, candidate_id)):
            if score is None:
                continue
            s.add(EvalResult(run_id=run_id, mode="parametric", split="heldout", subtask="overall", metric=score.metric,
                             value=float(score.value), n=int(score.n), base_model=cand.base_model, hypernet_id=hid,
                             details={"role": role, "candidate": candidate_id,
                                      "baseline": base.id if base else None, **score.details}))
        row.status = verdict
        row.metrics = {**(row.metrics or {}), "gate": {
            "verdict": verdict, "reason": reason, "baseline_id": base.id if base else None,
            "baseline": b.value if b else None, "candidate": c.value if c else None,
            "metric": c.metric if c else None, "tolerance": ctx.settings.gate_tolerance}}
    return {"candidate": candidate_id, "status": verdict, "accepted": verdict == "accepted", "reason": reason}


def training_samples(ctx: EvolveContext, trajectory_ids: list[int]) -> list[dict[str, Any]]:
    """Stage-3 samples: each verified trajectory's messages, with the skill extraction drew from it."""
    from memory.models import Trajectory

    samples = []
    with ctx.store.session() as s:
        for tid in trajectory_ids:
            row = s.get(Trajectory, tid)
            name = (row.extraction_info or {}).get("skill") if row is not None else None
            skill = skill_repo.current(s, name) if name else None
            if skill is None or skill.status != "active":
                continue
            messages = [{"role": st.role, "content": st.content} for st in row.steps]
            if any(m["role"] == "assistant" for m in messages):
                samples.append({"skill": skill.name, "skill_text": skill_repo.to_doc(skill).text,
                                "messages": messages, "type": "trajectory", "trajectory": tid})
    return samples


def default_retrain(ctx: EvolveContext, request: RetrainRequest) -> TrainedCandidate:
    """Stage-3 fine-tuning with the project's trainer (agent.learn.hypernet_runs), from the current hypernetwork."""
    import json
    import time

    try:
        from agent.learn.hypernet_runs import TrainOptions, run_training
    except ImportError:
        raise TrainingUnavailable("training not available: agent.learn.hypernet_runs (the hypernetwork training loop) "
                                  "is not part of this installation") from None
    samples = training_samples(ctx, request.trajectory_ids)
    if not samples:
        raise TrainingUnavailable("nothing to train on: no new verified trajectory has an extracted skill yet")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    data = request.out_dir / f"evolve-data-{stamp}"
    data.mkdir(parents=True, exist_ok=True)
    (data / "train-stage3.jsonl").write_text("".join(json.dumps(x) + "\n" for x in samples), encoding="utf-8")
    init = str(request.parent_id) if request.parent_id is not None else None
    if init is None:
        from agent.runtime.hypernet_loader import SHIPPED

        shipped = SHIPPED.get(ctx.base_model)
        init = str(shipped) if shipped is not None and shipped.is_file() else "scratch"
    opts = TrainOptions(stages=(3,), data=data, init=init, out=request.out_dir / f"hypernet-evolve-{stamp}.safetensors",
                        max_tokens=ctx.settings.retrain_max_tokens, progress=False)
    with ctx.model_lock:  # the base model is shared with queued solves
        outcomes = run_training(ctx.store, ctx.loaded(), opts)
    last = outcomes[-1] if outcomes else None
    if last is None or not last.path:
        raise RuntimeError(f"training produced no checkpoint ({getattr(last, 'skipped', None) or 'unfinished'})")
    return TrainedCandidate(last.path, Path(last.path).stem, stage="3",
                            config={"samples": len(samples), "data": str(data)}, metrics=dict(last.metrics))


def default_evaluate(ctx: EvolveContext, checkpoint: HypernetCheckpoint | None) -> GateScore:
    """Adherence of the model with parametric skills on held-out seed skills (agent.learn.evaluate)."""
    try:
        from agent.learn.evaluate import aggregate, evaluate
        from agent.synth.eval_items import make_eval_items
    except ImportError:
        raise TrainingUnavailable("evaluation not available: agent.learn.evaluate is not part of this installation") from None
    from agent.runtime.hypernet_loader import load

    items, per = [], {}
    for item in make_eval_items(split="heldout", n=1, seed=0):
        names = per.setdefault(item.skill.subtask, [])
        if item.skill.name not in names and len(names) < ctx.settings.gate_skills:
            names.append(item.skill.name)
        if item.skill.name in names:
            items.append(item)
    with ctx.model_lock:
        loaded = ctx.loaded()
        handle = load(loaded, ctx.store, checkpoint.path if checkpoint else None)
        results = evaluate(items, loaded, handle, modes=("parametric",), store=None, bertscore=False)
    overall = aggregate(results)["parametric"]["overall"]
    return GateScore("adherence", float(overall["adherence"]), int(overall["n"]),
                     {"hypernet": handle.source, "check_score": overall["check_score"]})
