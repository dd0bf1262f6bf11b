"""Stage 1 and 2 sample synthesis on a small copy of the library."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from agent import checks as ck
from agent.tasks import mutations as mu
from agent import synth as sy
from agent.synth import build
from agent.tasks.task import SUBTASKS
from memory.skillfile import read_skill_dir

LIBRARY = Path(__file__).resolve().parent.parent / "memory" / "library"


@pytest.fixture(scope="module")
def small_lib(tmp_path_factory) -> Path:
    """Two train skills and one held-out skill per subtask."""
    root = tmp_path_factory.mktemp("lib")
    picked = {(s, split): 0 for s in SUBTASKS for split in ("train", "heldout")}
    for folder in sorted(LIBRARY.iterdir()):
        doc = read_skill_dir(folder)
        key = (doc.metadata["subtask"], doc.metadata["split"])
        if picked[key] < (2 if key[1] == "train" else 1):
            picked[key] += 1
            shutil.copytree(folder, root / folder.name)
    return root


@pytest.fixture(scope="module")
def train_run(small_lib, tmp_path_factory) -> sy.SynthResult:
    return sy.synth(small_lib, (1, 2), 2, 7, tmp_path_factory.mktemp("out") / "train", "train")


def _names(lib: Path, split: str) -> set[str]:
    return {read_skill_dir(p).name for p in lib.iterdir() if read_skill_dir(p).metadata["split"] == split}


def test_synth_is_byte_identical_for_a_seed(small_lib, train_run, tmp_path):
    again = sy.synth(small_lib, (1, 2), 2, 7, tmp_path / "again", "train")
    for name in [*train_run.files, "manifest.json"]:
        assert (train_run.out_dir / name).read_bytes() == (again.out_dir / name).read_bytes(), name
    other = sy.synth(small_lib, (2,), 2, 8, tmp_path / "other", "train")
    assert (other.out_dir / "train-stage2.jsonl").read_bytes() != (train_run.out_dir / "train-stage2.jsonl").read_bytes()


def test_heldout_skills_never_appear_in_train_files(small_lib, train_run, tmp_path):
    heldout = _names(small_lib, "heldout")
    train = _names(small_lib, "train")
    for name in train_run.files:
        text = (train_run.out_dir / name).read_text(encoding="utf-8")
        assert not any(h in text for h in heldout)
        assert {s["skill"] for s in sy.read_samples(train_run.out_dir / name)} <= train
    held = sy.synth(small_lib, (1, 2), 1, 7, tmp_path / "held", "heldout")
    assert set(held.files) == {"heldout-stage1.jsonl", "heldout-stage2.jsonl"}
    assert {s["skill"] for s in sy.read_samples(held.out_dir / "heldout-stage2.jsonl")} == heldout


def test_manifest_counts_match_the_files(train_run):
    manifest = json.loads((train_run.out_dir / "manifest.json").read_text())
    samples = [s for name in train_run.files for s in sy.read_samples(train_run.out_dir / name)]
    assert manifest["counts"]["total"] == len(samples) == sum(train_run.files.values())
    for key, field in (("by_skill", "skill"), ("by_subtask", "subtask"), ("by_type", "type"), ("by_stage", "stage")):
        counted: dict[str, int] = {}
        for s in samples:
            counted[str(s[field])] = counted.get(str(s[field]), 0) + 1
        assert manifest["counts"][key] == counted, key
    for name, info in manifest["files"].items():
        assert info["samples"] == train_run.files[name]
    assert manifest["seed"] == 7 and manifest["split"] == "train" and manifest["library_hash"]
    assert manifest["code_version"] and isinstance(manifest["discards"]["by_reason"], dict)
    assert set(manifest["counts"]["by_subtask"]) == set(SUBTASKS)


def test_samples_are_short_skill_free_and_follow_the_skill(small_lib, train_run):
    docs = {read_skill_dir(p).name: read_skill_dir(p) for p in small_lib.iterdir()}
    types = set()
    for name in train_run.files:
        for sample in sy.read_samples(train_run.out_dir / name):
            types.add((sample["stage"], sample["type"]))
            doc = docs[sample["skill"]]
            assert [m["role"] for m in sample["messages"]] == ["user", "assistant"]
            user, answer = sample["messages"][0]["content"], sample["messages"][1]["content"]
            assert doc.description not in user and doc.body.strip()[:200] not in user
            assert sy.approx_tokens(answer) <= sy.MAX_ASSISTANT_TOKENS
            if sample["type"] == "task":
                assert sample["reference"]["checks"] == doc.metadata["checks"]
                assert ck.check(answer, doc.metadata["checks"]).passed  # task-free rules hold as well
    assert types == {(1, "reconstruct"), (1, "continue"), (2, "qa"), (2, "task")}


def test_knowledge_answers_come_from_the_skill(small_lib, train_run):
    docs = {read_skill_dir(p).name: read_skill_dir(p) for p in small_lib.iterdir()}
    for sample in sy.read_samples(train_run.out_dir / "train-stage1.jsonl"):
        answer = sample["messages"][1]["content"]
        for line in answer.splitlines():
            text = line.split(". ", 1)[-1] if line[:1].isdigit() else line[2:]
            assert text in docs[sample["skill"]].body
    qa = [s for s in sy.read_samples(train_run.out_dir / "train-stage2.jsonl") if s["type"] == "qa"]
    assert any("characters" in s["messages"][1]["content"] or "`##" in s["messages"][1]["content"] for s in qa)


def test_bad_input_raises_clear_errors(small_lib, tmp_path):
    with pytest.raises(sy.SynthError, match="unknown split"):
        sy.synth(small_lib, (1,), 1, 0, tmp_path / "a", "test")
    with pytest.raises(sy.SynthError, match="stages"):
        sy.synth(small_lib, (4,), 1, 0, tmp_path / "a", "train")
    with pytest.raises(sy.SynthError, match="n_per_skill"):
        sy.synth(small_lib, (1,), 0, 0, tmp_path / "a", "train")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(sy.SynthError, match="empty"):
        sy.synth(empty, (1,), 1, 0, tmp_path / "a", "train")
    bad = tmp_path / "bad" / "odd-skill"
    bad.mkdir(parents=True)
    (bad / "SKILL.md").write_text("---\nname: odd-skill\ndescription: x\nmetadata:\n  subtask: poetry\n---\nbody\n")
    with pytest.raises(sy.SynthError, match="unknown subtask"):
        sy.synth(bad.parent, (1,), 1, 0, tmp_path / "a", "train")
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("x")
    with pytest.raises(sy.SynthError, match="not empty"):
        sy.synth(small_lib, (1,), 1, 0, busy, "train")
    assert (busy / "keep.txt").exists()
    with pytest.raises(sy.SynthError, match="unknown subtask"):
        sy.make_eval_items(small_lib, "heldout", subtask="poetry")


def test_read_samples_rejects_malformed_lines(tmp_path):
    good = {"skill": "a", "subtask": "bug-fixing", "stage": 2, "type": "qa", "reference": None,
            "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    path = tmp_path / "s.jsonl"
    path.write_text(json.dumps(good) + "\n\n" + json.dumps(good) + "\n")
    assert len(sy.read_samples(path)) == 2
    for broken, message in (
        ("{not json", "s.jsonl:1: not JSON"),
        (json.dumps({**good, "stage": 5}), "bad stage"),
        (json.dumps({k: v for k, v in good.items() if k != "messages"}), "missing field 'messages'"),
        (json.dumps({**good, "messages": [{"role": "robot", "content": "x"}]}), "role"),
        (json.dumps({**good, "messages": [{"role": "assistant", "content": "a"}, {"role": "user", "content": "q"}]}), "last message"),
        (json.dumps({**good, "subtask": "poetry"}), "unknown subtask"),
    ):
        path.write_text(broken + "\n")
        with pytest.raises(sy.SampleFormatError, match=message):
            sy.read_samples(path)
    assert issubclass(sy.SampleFormatError, ValueError)


def test_failure_leaves_no_partial_output(small_lib, tmp_path, monkeypatch):
    def explode(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(build, "stage2_qa", explode)
    out = tmp_path / "out"
    with pytest.raises(RuntimeError):
        sy.synth(small_lib, (1, 2), 1, 0, out, "train")
    assert not out.exists() and list(tmp_path.iterdir()) == []
    monkeypatch.setattr(build, "_jsonl", explode)  # a failure while writing files
    with pytest.raises(RuntimeError):
        sy.synth(small_lib, (1,), 1, 0, out, "train")
    assert list(tmp_path.iterdir()) == []


def test_overwrite_replaces_a_previous_run(small_lib, tmp_path):
    out = tmp_path / "out"
    sy.synth(small_lib, (1,), 1, 0, out, "train")
    (out / "stale.txt").write_text("old")
    result = sy.synth(small_lib, (1,), 1, 1, out, "train", overwrite=True)
    assert not (out / "stale.txt").exists() and result.manifest["seed"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_eval_items_are_checked_references_on_held_out_code(small_lib):
    items = sy.make_eval_items(small_lib, "heldout", n=2, seed=0)
    heldout = _names(small_lib, "heldout")
    assert {i.skill.name for i in items} == heldout
    for item in items:
        assert ck.check(item.reference, item.skill.metadata["checks"], item.task).passed
        module = item.task.truth.get("module") or item.task.truth.get("scope")
        assert module in mu.EVAL_MODULES
    only = sy.make_eval_items(small_lib, "heldout", subtask="code-review", n=1, seed=0)
    assert {i.task.subtask for i in only} == {"code-review"}
