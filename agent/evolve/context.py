"""What every evolution job gets: the settings (from a file or flags) and `EvolveContext`, which carries the
store and each dependency a job calls (verifier, writer, embedder, converter, trainer, evaluators), all
injectable: tests pass fakes; the defaults load the local model and the hypernetwork lazily, once per process."""

from __future__ import annotations

import hashlib
import logging
import re
import threading
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

from agent.evolve.verify import verify_in_sandbox
from hypernet.lora import LoraWeights
from memory import evolution as evo_repo
from memory import skills as skill_repo
from memory.db import Store
from memory.models import Adapter, HypernetCheckpoint

log = logging.getLogger(__name__)

JOB_NAMES = ("extract", "accumulate", "retrain", "compact")
# β of the EMA, chosen from behaviour (bench/bench_forgetting_behaviour.py): the best balance of a new
# skill's gain right after it is added and the tracked skills' gain 50 additions later, in both runs
# (forgetting_behaviour.json, forgetting_behaviour_track12.json: 0.95 ties within 0.002 there, and is
# less plastic). The adapter-space proxy (bench_forgetting.py) had picked 0.8.
DEFAULT_BETA = 0.9
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
    retrain_steps: int = 0  # optimiser steps of one retrain; 0: one epoch over its samples
    retrain_replay: int = 16  # earlier verified trajectories replayed beside the new ones (against forgetting)
    gate_tolerance: float = 0.0
    gate_skills: int = 2  # held-out skills per subtask in the default gate evaluations (retrain and EMA)
    ema_gate: bool = True  # score each EMA fold on held-out items; roll back a fold that lowers the score
    ema_gate_tolerance: float = 0.0  # how far below its parent's score a fold may land and be kept
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
                self.retrain_max_tokens < 64 or self.retrain_steps < 0 or self.retrain_replay < 0:
            raise SettingsError("batch and gate_skills must be >= 1; keep_last, retrain_min_new, retrain_steps and "
                                "retrain_replay >= 0; retrain_max_tokens >= 64")
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


@dataclass(frozen=True)
class FoldableAdapter:
    """A skill's adapter with the hypernetwork that made it: what accumulate folds into the EMA."""

    lora: LoraWeights
    adapter_id: int | None
    hypernet_id: int | None


Verifier = Callable[[Any], Any]
Writer = Callable[["EvolveContext"], "tuple[Any, str] | None"]
Converter = Callable[["EvolveContext", Any, int], Any]
Trainer = Callable[["EvolveContext", RetrainRequest], TrainedCandidate]
Evaluator = Callable[["EvolveContext", HypernetCheckpoint | None], GateScore]
# an EMA version (a detached Adapter row, weights loaded; None: no persistent adapter) -> its held-out score
AdapterEvaluator = Callable[["EvolveContext", Adapter | None], GateScore]


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
    adapter_evaluator: AdapterEvaluator | None = None
    fault_hook: Callable[[str], None] | None = None  # test seam: called at named points inside the jobs
    stop_event: threading.Event = field(default_factory=threading.Event)
    model_lock: Any = field(default_factory=threading.RLock)  # the base model is shared with queued solves
    _loaded: Any = None
    _handle: Any = None
    _writer: Any = None
    _heldout: Any = None

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
                from agent.runtime.endpoint import EndpointChat

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
        if self.converter is not None:
            return self.converter(self, doc, skill_id)
        from agent.runtime.skill_adapters import convert_skill

        with self.model_lock:
            handle = self.handle()
            conv = convert_skill(self.store, self.loaded(), handle, doc, skill_id)
        return FoldableAdapter(conv.lora, conv.adapter_id, handle.checkpoint_id)

    def heldout_items(self) -> list[Any]:
        """What the default gate evaluations score on: one task each of `gate_skills` held-out seed skills per
        subtask (building them runs the references' checks: once per process)."""
        if self._heldout is None:
            from agent.synth.eval_items import make_eval_items

            items, per = [], {}
            for item in make_eval_items(split="heldout", n=1, seed=0):
                names = per.setdefault(item.skill.subtask, [])
                if item.skill.name not in names and len(names) < self.settings.gate_skills:
                    names.append(item.skill.name)
                if item.skill.name in names:
                    items.append(item)
            self._heldout = items
        return self._heldout

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
