"""Hypernetwork training runs: synth JSONL + skill texts in, checkpoints (files + store rows) out.

    outcomes = run_training(store, load_model("smollm2-135m-instruct"), TrainOptions(stages=(1, 2), data=...))

Data: `DIR/train-stage{n}.jsonl` (synth's format, or any JSONL of {"skill", "messages"} for stage 3),
validated on `heldout-stage{n}.jsonl` (in DIR or --val-data) or, failing that, on a few train skills
held out by name. Skill texts come from the library folders (and DIR/skills, and a sample's own
"skill_text"). Each stage n writes `<out stem>.stage{n}.safetensors` (+ a `.state.safetensors` to
resume from), registers a store row whose parent is the checkpoint it started from, and the last
stage is copied to `--out`.

The shipped checkpoint's run (command, size and time estimate): bench/results/training_full_run.md.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from sqlalchemy import select

from agent.runtime.base_model import LoadedModel, agent_home
from hypernet.batching import IGNORE, Example
from hypernet.checkpoint import hypernet_from_bytes, hypernet_to_bytes
from hypernet.config import HypernetConfig, HypernetError
from hypernet.hypernetwork import Hypernetwork
from hypernet.train import TrainConfig, TrainData, TrainResult, make_accelerator, train
from hypernet.trainstate import TrainingError, atomic_write
from memory import evolution as evo_repo
from memory.db import Store
from memory.errors import SkillFormatError
from memory.models import HypernetCheckpoint
from memory.skillfile import discover, read_skill_dir

__all__ = ["TrainingError", "TrainOptions", "Replay", "StageOutcome", "run_training", "tokenize_chat",
           "list_checkpoints"]

ICL_PREFIX = "Follow these skills:\n\n"  # the agent's in-context prompt (agent/runtime/skill_context.py)
SAVE_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
# Per stage: stage 1 adds top-k context distillation to the reconstruction targets; the 135M teacher
# is weak (DESIGN.md), so the checked targets keep the larger weight.
STAGE_DEFAULTS = {1: {"kd_weight": 0.5}, 2: {"kd_weight": 0.0}, 3: {"kd_weight": 0.0}}


# --- tokenisation ----------------------------------------------------------------------------------
def _render(tokenizer, messages: list[dict[str, str]], generation_prompt: bool) -> str:
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
    except Exception as e:  # jinja errors, unknown roles, ...
        raise TrainingError(f"the tokenizer's chat template cannot render this conversation: {e}") from None


def chat_pieces(tokenizer, messages: list[dict[str, str]]) -> list[tuple[str, bool]]:
    """The conversation as (text, is_target) pieces: each assistant reply up to and including its
    end-of-turn token is a target; the template's headers, other roles and what follows are not.

    Rendered prefix by prefix, so the prompt before each reply is exactly what generation would see.
    """
    if not getattr(tokenizer, "chat_template", None):
        raise TrainingError("the tokenizer has no chat template")
    eos = tokenizer.eos_token or ""
    pieces: list[tuple[str, bool]] = []
    done = ""
    for i, msg in enumerate(messages):
        if msg["role"] != "assistant":
            continue
        head = _render(tokenizer, messages[:i], True)
        full = _render(tokenizer, messages[:i + 1], False)
        if not head.startswith(done) or not full.startswith(head):
            raise TrainingError("the chat template does not render a conversation prefix by prefix, so the "
                                "assistant tokens cannot be located")
        reply = full[len(head):]
        start = len(msg["content"]) if reply.startswith(msg["content"]) else 0
        end = reply.find(eos, start) if eos else -1
        end = end + len(eos) if end >= 0 else len(reply)
        pieces += [(head[len(done):], False), (reply[:end], True), (reply[end:], False)]
        done = full
    return [(text, target) for text, target in pieces if text]


def _tokenize(tokenizer, pieces: list[tuple[str, bool]]) -> tuple[list[int], list[int]]:
    ids: list[int] = []
    labels: list[int] = []
    for text, target in pieces:
        piece = tokenizer(text, add_special_tokens=False)["input_ids"]
        ids += piece
        labels += piece if target else [IGNORE] * len(piece)
    return ids, labels


def tokenize_chat(tokenizer, messages: list[dict[str, str]], max_tokens: int | None = None) -> tuple[list[int], list[int]]:
    """(input_ids, labels): labels are the ids on assistant tokens and IGNORE elsewhere (not shifted)."""
    ids, labels = _tokenize(tokenizer, chat_pieces(tokenizer, messages))
    if max_tokens is not None:
        ids, labels = ids[:max_tokens], labels[:max_tokens]
    return ids, labels


def with_skill_in_context(messages: list[dict[str, str]], skill_text: str) -> list[dict[str, str]]:
    """ICL: the skill as (the start of) the system message."""
    system = ICL_PREFIX + skill_text
    if messages and messages[0]["role"] == "system":
        return [{"role": "system", "content": f"{system}\n\n{messages[0]['content']}"}, *messages[1:]]
    return [{"role": "system", "content": system}, *messages]


def tokenize_teacher(tokenizer, messages: list[dict[str, str]], skill_text: str) -> tuple[list[int], list[int], int]:
    """The conversation with the skill in context: (ids, labels, prefix), where the first `prefix`
    tokens are the skill's system block alone (tokenised apart, so every example of the skill shares them)."""
    chat = with_skill_in_context(messages, skill_text)
    pieces = chat_pieces(tokenizer, chat)
    system = _render(tokenizer, chat[:1], False)
    if not pieces or not pieces[0][0].startswith(system) or pieces[0][0] == system:
        ids, labels = _tokenize(tokenizer, pieces)
        return ids, labels, 0
    pieces = [(system, False), (pieces[0][0][len(system):], False), *pieces[1:]]
    ids, labels = _tokenize(tokenizer, pieces)
    return ids, labels, len(tokenizer(system, add_special_tokens=False)["input_ids"])


def make_example(tokenizer, messages: list[dict[str, str]], skill_key: str, skill_text: str, max_tokens: int,
                 teacher: bool) -> Example | None:
    """One training example, or None when truncation leaves no assistant token."""
    ids, labels = tokenize_chat(tokenizer, messages, max_tokens)
    kept = [t for t in labels if t != IGNORE]
    if not kept:
        return None
    if not teacher:
        return Example(skill_key, tuple(ids), tuple(labels))
    t_ids, t_labels, prefix = tokenize_teacher(tokenizer, messages, skill_text)
    positions = [i for i, t in enumerate(t_labels) if t != IGNORE][:len(kept)]
    t_ids, t_labels = t_ids[:positions[-1] + 1], t_labels[:positions[-1] + 1]
    if [t_labels[i] for i in positions] != kept:
        raise TrainingError("with the skill in context the chat template tokenises the assistant replies "
                            "differently; context distillation cannot align teacher and student")
    return Example(skill_key, tuple(ids), tuple(labels), tuple(t_ids), tuple(t_labels), prefix)


def tokenizer_fingerprint(tokenizer) -> str:
    """Hash of the vocabulary and chat template: data or state made with another tokenizer is refused."""
    h = hashlib.sha256()
    h.update(json.dumps(sorted(tokenizer.get_vocab().items()), ensure_ascii=False).encode())
    h.update(str(getattr(tokenizer, "chat_template", "") or "").encode())
    return h.hexdigest()[:16]


# --- data ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Sample:
    skill: str
    messages: list[dict[str, str]]
    skill_text: str | None = None
    type: str = ""


def read_jsonl(path: Path) -> list[Sample]:
    """Samples of any stage: each line needs "skill" and "messages" (ending in an assistant reply or not)."""
    out = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise TrainingError(f"cannot read {path}: {e}") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
        except json.JSONDecodeError as e:
            raise TrainingError(f"{path}:{number}: not JSON ({e.msg})") from None
        msgs = d.get("messages") if isinstance(d, dict) else None
        if not isinstance(d, dict) or not isinstance(d.get("skill"), str) or not isinstance(msgs, list):
            raise TrainingError(f"{path}:{number}: a sample needs a string 'skill' and a 'messages' list")
        if not all(isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                   for m in msgs):
            raise TrainingError(f"{path}:{number}: each message needs a string role and content")
        if not any(m["role"] == "assistant" for m in msgs):
            raise TrainingError(f"{path}:{number}: no assistant message to learn from")
        text = d.get("skill_text")
        out.append(Sample(d["skill"], msgs, text if isinstance(text, str) else None, str(d.get("type", ""))))
    return out


def stage_files(data: Path, val_data: Path | None, stage: int) -> tuple[Path | None, Path | None]:
    train_file = next((p for p in (data / f"train-stage{stage}.jsonl", data / f"stage{stage}.jsonl") if p.is_file()),
                      None)
    val_file = next((d / f"heldout-stage{stage}.jsonl" for d in (val_data, data)
                     if d is not None and (d / f"heldout-stage{stage}.jsonl").is_file()), None)
    return train_file, val_file


def read_manifest(folder: Path) -> dict[str, Any]:
    path = folder / "manifest.json"
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise TrainingError(f"{path}: unreadable manifest ({e})") from None
    if not isinstance(data, dict):
        raise TrainingError(f"{path}: the manifest must be a JSON object")
    return data


def check_manifest(manifest: dict[str, Any], where: Path, base_model: str, tokenizer_fp: str) -> None:
    """Data made for one base model / tokenizer says so in its manifest; refuse it for another."""
    if "base_model" in manifest and manifest["base_model"] != base_model:
        raise TrainingError(f"{where}: the data was made for base model {manifest['base_model']!r}, "
                            f"not {base_model!r}")
    if "tokenizer" in manifest and manifest["tokenizer"] != tokenizer_fp:
        raise TrainingError(f"{where}: the data was made with another tokenizer ({manifest['tokenizer']} != "
                            f"{tokenizer_fp})")


def load_skill_texts(folders: Sequence[Path]) -> dict[str, str]:
    """name -> SkillDoc.text from every library folder that exists (later folders win)."""
    texts: dict[str, str] = {}
    for folder in folders:
        if not folder.is_dir():
            continue
        try:
            skill_dirs = discover(folder)
        except SkillFormatError:
            continue
        for d in skill_dirs:
            doc = read_skill_dir(d)
            texts[doc.name] = doc.text
    return texts


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def data_manifest_hash(files: Sequence[Path], skill_texts: dict[str, str], manifests: Sequence[Path]) -> str:
    """What the run learned from: the sample files, the skill texts used and the synth manifests."""
    desc = {"files": {p.name: _sha(p.read_bytes()) for p in files},
            "skills": {k: _sha(v.encode()) for k, v in sorted(skill_texts.items())},
            "manifests": {str(p.parent.name): _sha(p.read_bytes()) for p in manifests if p.is_file()}}
    return _sha(json.dumps(desc, sort_keys=True).encode())


def split_heldout(samples: list[Sample], fraction: float = 0.1) -> tuple[list[Sample], list[Sample]]:
    """Without a held-out file: hold out whole skills (by a hash of the name, so the split is stable)."""
    names = sorted({s.skill for s in samples}, key=lambda n: _sha(n.encode()))
    if len(names) < 3:
        return samples, []
    held = set(names[:max(1, round(fraction * len(names)))])
    return [s for s in samples if s.skill not in held], [s for s in samples if s.skill in held]


@dataclass
class StageData:
    data: TrainData
    manifest_hash: str
    stats: dict[str, Any]


@dataclass(frozen=True)
class Replay:
    """Mix the previous stage's training samples into a stage (rehearsal), so that a narrow stage (stage 3's
    trajectories are all bug fixing) does not pull the adapters away from the other subtasks."""
    ratio: float  # replayed samples per sample of the stage
    data: Path | None = None  # folder of train-stage{n-1}.jsonl (default: --data)
    seed: int = 0


def replay_samples(replay: Replay | None, stage: int, data_dir: Path,
                   n_stage: int) -> tuple[list[Sample], Path | None]:
    """round(ratio * n_stage) samples of stage n-1 (all of them when there are fewer), drawn without
    replacement by a seeded generator so that a run and its --resume see the same mix."""
    if replay is None or replay.ratio <= 0 or stage == 1:
        return [], None
    folder = replay.data or data_dir
    path, _ = stage_files(folder, None, stage - 1)
    if path is None:
        raise TrainingError(f"--replay-data {folder}: no train-stage{stage - 1}.jsonl to replay")
    pool = read_jsonl(path)
    order = torch.randperm(len(pool), generator=torch.Generator().manual_seed(replay.seed)).tolist()
    return [pool[i] for i in order[:round(replay.ratio * n_stage)]], path


def load_stage_data(loaded: LoadedModel, stage: int, data_dir: Path, val_dir: Path | None,
                    libraries: Sequence[Path], max_tokens: int, teacher: bool,
                    replay: Replay | None = None) -> StageData | None:
    """Tokenised examples of one stage; None when DIR has no data for it."""
    tok = loaded.tokenizer
    train_file, val_file = stage_files(data_dir, val_dir, stage)
    if train_file is None:
        return None
    fp = tokenizer_fingerprint(tok)
    train_samples = read_jsonl(train_file)
    val_samples = read_jsonl(val_file) if val_file else []
    if not val_samples:
        train_samples, val_samples = split_heldout(train_samples)
    replayed, replay_file = replay_samples(replay, stage, data_dir, len(train_samples))
    folders = (data_dir, val_dir, replay_file.parent if replay_file else None)
    manifests = [d / "manifest.json" for d in dict.fromkeys(x for x in folders if x is not None)]
    for m in manifests:
        check_manifest(read_manifest(m.parent), m.parent, loaded.name, fp)
    library = load_skill_texts([*libraries, data_dir / "skills"])

    texts: dict[str, str] = {}  # skill key (content hash) -> text
    skill_ids: dict[str, list[int]] = {}
    used: dict[str, str] = {}
    missing: set[str] = set()

    def key_for(s: Sample) -> str | None:
        text = s.skill_text or library.get(s.skill)
        if text is None:
            missing.add(s.skill)
            return None
        key = _sha(text.encode())
        if key not in texts:
            texts[key] = text
            skill_ids[key] = tok(text, add_special_tokens=False)["input_ids"]
            if not skill_ids[key]:
                raise TrainingError(f"skill {s.skill!r}: the text has no tokens")
        used[s.skill] = text
        return key

    dropped = Counter()

    def build(samples: list[Sample], with_teacher: bool) -> list[Example]:
        out = []
        for s in samples:
            key = key_for(s)
            if key is None:
                continue
            ex = make_example(tok, s.messages, key, texts[key], max_tokens, with_teacher)
            if ex is None:
                dropped["no-target-after-truncation"] += 1
            else:
                out.append(ex)
        return out

    train_ex = build(train_samples + replayed, teacher)
    val_ex = build(val_samples, True)  # teacher sequences give the in-context (ICL) baseline
    if missing:
        raise TrainingError(f"no text for skill(s) {', '.join(sorted(missing)[:5])}"
                            f"{' ...' if len(missing) > 5 else ''}: give the library folder with --library")
    if not train_ex:
        raise TrainingError(f"{train_file}: no usable training examples (all longer than --max-tokens "
                            f"{max_tokens} before the first assistant token?)")
    files = [p for p in (train_file, val_file, replay_file) if p is not None]
    pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
    stats = {"train_file": str(train_file), "val_file": str(val_file) if val_file else None,
             "train_examples": len(train_ex), "val_examples": len(val_ex),
             "train_skills": len({e.skill for e in train_ex}), "val_skills": len({e.skill for e in val_ex}),
             "dropped": dict(dropped), "types": dict(Counter(s.type for s in train_samples if s.type))}
    if replay_file is not None:
        stats.update(replayed=len(replayed), replay_file=str(replay_file))
    return StageData(TrainData(skill_ids, train_ex, val_ex, pad), data_manifest_hash(files, used, manifests), stats)


# --- checkpoints -----------------------------------------------------------------------------------
def stage_paths(out: Path, stage: int) -> tuple[Path, Path]:
    """(checkpoint, resumable state) of one stage, beside --out."""
    return (out.parent / f"{out.stem}.stage{stage}{out.suffix or '.safetensors'}",
            out.parent / f"{out.stem}.stage{stage}.state.safetensors")


def checkpoint_bytes(hn: Hypernetwork, dtype: torch.dtype) -> bytes:
    """The published checkpoint; float16 halves the file (its config still rebuilds a float32 net)."""
    if dtype == hn.dtype:
        return hypernet_to_bytes(hn)
    return hypernet_to_bytes(copy.deepcopy(hn).to(dtype))


def load_checkpoint_file(path: Path, base_model: str, expected_sha: str | None = None) -> tuple[Hypernetwork, str]:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise TrainingError(f"cannot read checkpoint {path}: {e}") from None
    sha = _sha(data)
    if expected_sha is not None and sha != expected_sha:
        raise TrainingError(f"checkpoint {path} does not match the sha256 recorded in the store (changed or corrupted)")
    try:
        return hypernet_from_bytes(data, base_model_id=base_model), sha
    except HypernetError as e:
        raise TrainingError(f"cannot start from {path}: {e}") from None


def register(store: Store, hn: Hypernetwork, *, name: str, stage: int, parent_id: int | None, path: Path, sha: str,
             config: dict[str, Any], data_hash: str | None, metrics: dict[str, Any], status: str = "candidate") -> int:
    """The checkpoint's row; a resumed, already finished stage finds its row again by sha256."""
    with store.session() as s:
        row = evo_repo.checkpoint_by_sha(s, sha, name=name, base_model=hn.base_model_id)
        row.stage, row.parent_id, row.path, row.status = str(stage), parent_id, str(path), status
        row.config, row.data_manifest_hash, row.metrics = config, data_hash, metrics
        s.flush()
        return row.id


def row_for_sha(store: Store, sha: str) -> int | None:
    with store.session() as s:
        row = s.scalars(select(HypernetCheckpoint.id).where(HypernetCheckpoint.sha256 == sha)).first()
        return row


def previous_stage_checkpoint(store: Store, base_model: str, stage: int, out: Path) -> tuple[Path, str | None] | None:
    """Where stage `stage` starts from: the previous stage's file beside --out, else the store's newest
    row of that stage (for this base model) whose file is still there."""
    beside, _ = stage_paths(out, stage - 1)
    if beside.is_file():
        return beside, None
    with store.session() as s:
        rows = s.scalars(select(HypernetCheckpoint)
                         .where(HypernetCheckpoint.base_model == base_model, HypernetCheckpoint.stage == str(stage - 1),
                                HypernetCheckpoint.status != "rejected")
                         .order_by(HypernetCheckpoint.id.desc())).all()
        for row in rows:
            if row.path and Path(row.path).is_file():
                return Path(row.path), row.sha256
    return None


def list_checkpoints(store: Store) -> list[dict[str, Any]]:
    with store.session() as s:
        rows = s.scalars(select(HypernetCheckpoint).order_by(HypernetCheckpoint.id.desc())).all()
        return [{"id": r.id, "name": r.name, "stage": r.stage, "parent_id": r.parent_id, "base_model": r.base_model,
                 "status": r.status, "steps": (r.metrics or {}).get("steps"),
                 "val_loss": (r.metrics or {}).get("val_loss"), "train_loss": (r.metrics or {}).get("train_loss"),
                 "data_manifest_hash": r.data_manifest_hash, "path": r.path, "sha256": r.sha256,
                 "created_at": r.created_at} for r in rows]


# --- runs ------------------------------------------------------------------------------------------
def default_out(model_name: str) -> Path:
    slug = Path(model_name).name.replace("/", "-") or "model"
    return agent_home() / "hypernets" / f"hypernet-{slug}.safetensors"


@dataclass
class TrainOptions:
    stages: tuple[int, ...]
    data: Path
    val_data: Path | None = None
    libraries: tuple[Path, ...] = ()
    out: Path | None = None
    init: str | None = None  # a checkpoint path, a store id, or "scratch"; default: the previous stage's
    resume: bool = False
    steps: int | None = None  # per stage; default from epochs
    epochs: float = 1.0
    max_tokens: int = 512
    save_dtype: str = "float16"
    hypernet: HypernetConfig = field(default_factory=HypernetConfig)  # for a run from scratch
    train: dict[str, Any] = field(default_factory=dict)  # TrainConfig overrides (batch_size, lr, ...)
    progress: bool = True
    replay: Replay | None = None  # stages after the first: mix in the previous stage's samples


@dataclass
class StageOutcome:
    stage: int
    checkpoint_id: int | None = None
    path: str | None = None
    sha256: str | None = None
    parent_id: int | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    skipped: str | None = None
    finished: bool = True


def _initial_hypernet(store: Store, loaded: LoadedModel, stage: int, opts: TrainOptions, out: Path,
                      chained: tuple[Hypernetwork, int | None] | None) -> tuple[Hypernetwork, int | None, str]:
    """(hypernet, parent checkpoint id, where it came from) for the start of a stage."""
    if chained is not None:
        return chained[0], chained[1], "previous stage of this run"
    if opts.init == "scratch" or (opts.init is None and stage == 1):
        torch.manual_seed(opts.train.get("seed") or 0)
        return Hypernetwork.for_model(loaded.model, opts.hypernet, base_model_id=loaded.name), None, "scratch"
    expected = None
    if opts.init is not None and opts.init.isdigit():
        with store.session() as s:
            row = s.get(HypernetCheckpoint, int(opts.init))
            if row is None or not row.path:
                raise TrainingError(f"no hypernetwork checkpoint with id {opts.init} (or it has no file)")
            path, expected = Path(row.path), row.sha256
    elif opts.init is not None:
        path = Path(opts.init)
    else:
        found = previous_stage_checkpoint(store, loaded.name, stage, out)
        if found is None:
            raise TrainingError(f"stage {stage} starts from a stage-{stage - 1} checkpoint and there is none for "
                                f"{loaded.name}: run `agent hypernet train --stage {stage - 1}` first, or pass "
                                "--init PATH|ID|scratch")
        path, expected = found
    hn, sha = load_checkpoint_file(path, loaded.name, expected)
    parent = row_for_sha(store, sha)
    if parent is None:  # an outside file: give it a row so the lineage is complete
        from agent.runtime.hypernet_loader import register as register_plain

        parent = register_plain(store, hn, sha, str(path), path.stem)
    return hn, parent, str(path)


def _settings(stage: int, opts: TrainOptions) -> dict[str, Any]:
    """TrainConfig fields of a stage: its defaults, overridden by what the user set."""
    return {**STAGE_DEFAULTS[stage], **{k: v for k, v in opts.train.items() if v is not None}}


def _train_config(stage: int, opts: TrainOptions, n_train: int, world: int) -> TrainConfig:
    cfg = TrainConfig(stage=stage, steps=1, **_settings(stage, opts))
    steps = opts.steps or max(1, round(opts.epochs * n_train / (cfg.batch_size * cfg.grad_accum * world)))
    # the default warm-up (10 steps) is at most a tenth of a short run
    warmup = cfg.warmup if opts.train.get("warmup") is not None else min(cfg.warmup, steps // 10)
    return replace(cfg, steps=steps, warmup=warmup)


def run_training(store: Store, loaded: LoadedModel, opts: TrainOptions,
                 on_log: Callable[[dict[str, Any]], None] | None = None,
                 stop_at: int | None = None, skill_states: dict | None = None) -> list[StageOutcome]:
    """Run the stages in order, each starting from the previous one's checkpoint.

    `skill_states`: frozen encoder states to share with other runs on the same base model (by default
    each skill is encoded once per run)."""
    if opts.save_dtype not in SAVE_DTYPES:
        raise TrainingError(f"--save-dtype must be one of {', '.join(SAVE_DTYPES)}")
    if not opts.data.is_dir():
        raise TrainingError(f"--data {opts.data}: no such folder")
    out = Path(opts.out) if opts.out else default_out(loaded.name)
    out.parent.mkdir(parents=True, exist_ok=True)
    acc = make_accelerator(opts.train.get("mixed_precision") or "auto")
    fp = tokenizer_fingerprint(loaded.tokenizer)
    outcomes: list[StageOutcome] = []
    chained: tuple[Hypernetwork, int | None] | None = None
    skill_states = {} if skill_states is None else skill_states  # shared by the stages: one encode per skill
    for stage in opts.stages:
        kd = _settings(stage, opts)["kd_weight"] > 0
        sd = load_stage_data(loaded, stage, opts.data, opts.val_data, opts.libraries, opts.max_tokens, teacher=kd,
                             replay=opts.replay)
        if sd is None:
            if len(opts.stages) > 1 and stage == 3:
                outcomes.append(StageOutcome(stage, skipped=f"no train-stage3.jsonl in {opts.data}"))
                continue
            raise TrainingError(f"{opts.data}: no train-stage{stage}.jsonl (make it with the synth step)")
        hn, parent, source = _initial_hypernet(store, loaded, stage, opts, out, chained)
        cfg = _train_config(stage, opts, len(sd.data.train), acc.num_processes)
        ckpt_path, state_path = stage_paths(out, stage)
        identity = {"base_model": loaded.name, "tokenizer": fp, "data": sd.manifest_hash,
                    "max_tokens": opts.max_tokens}
        result: TrainResult = train(loaded.model, hn, sd.data, cfg, state_path=state_path, identity=identity,
                                    resume=opts.resume, stop_at=stop_at, progress=opts.progress, accelerator=acc,
                                    on_log=on_log, skill_states=skill_states)
        outcome = StageOutcome(stage, parent_id=parent, metrics=result.metrics, finished=result.finished,
                               data={**sd.stats, "started_from": source})
        if result.finished and acc.is_main_process:
            data = checkpoint_bytes(result.hypernet, SAVE_DTYPES[opts.save_dtype])
            atomic_write(ckpt_path, data)
            sha = _sha(data)
            config = {"hypernet": result.hypernet.config.to_dict(), "train": cfg.to_dict(), "tokenizer": fp,
                      "max_tokens": opts.max_tokens, "save_dtype": opts.save_dtype, "data": sd.stats}
            outcome.checkpoint_id = register(store, result.hypernet, name=f"{out.stem}-stage{stage}", stage=stage,
                                             parent_id=parent, path=ckpt_path.resolve(), sha=sha, config=config,
                                             data_hash=sd.manifest_hash, metrics=result.metrics)
            outcome.path, outcome.sha256 = str(ckpt_path), sha
        acc.wait_for_everyone()
        outcomes.append(outcome)
        if not result.finished:
            break  # stopped early (stop_at): later stages wait for a --resume
        chained = (result.hypernet, outcome.checkpoint_id)
    last = next((o for o in reversed(outcomes) if o.path), None)
    if last is not None and all(o.finished for o in outcomes) and acc.is_main_process and Path(last.path) != out:
        atomic_write(out, Path(last.path).read_bytes())
    return outcomes
