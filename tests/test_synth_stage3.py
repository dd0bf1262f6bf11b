"""Stage 3: scripted bug-task trajectories, verified (and replayed) in the bubblewrap sandbox."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from agent import checks as ck
from agent import synth as sy
from agent.synth import stage3 as s3
from agent.tasks import mutations as mu
from agent.runtime.actions import parse
from agent.runtime.loop import SYSTEM
from agent.learn.hypernet_runs import read_jsonl, stage_files
from memory.skillfile import read_skill_dir
from sandbox_fixtures import needs_bwrap

LIBRARY = Path(__file__).resolve().parent.parent / "memory" / "library"
# Short reports: their trajectories fit the 768-token training window.
TRAIN_BUG_SKILLS = ("one-line-bug-pointer", "root-cause-statement")
HELDOUT_BUG_SKILL = "function-location-confidence"
OTHER_SKILL = "angular-commit-format"  # not a bug skill: no trajectories

pytestmark = needs_bwrap


@pytest.fixture(scope="module")
def lib(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("lib")
    for name in (*TRAIN_BUG_SKILLS, HELDOUT_BUG_SKILL, OTHER_SKILL):
        shutil.copytree(LIBRARY / name, root / name)
    return root


@pytest.fixture(scope="module")
def run(lib, tmp_path_factory) -> sy.SynthResult:
    return sy.synth(lib, (3,), 1, 5, tmp_path_factory.mktemp("out") / "train", "train")


def test_stage3_is_byte_identical_for_a_seed(lib, run, tmp_path):
    again = sy.synth(lib, (3,), 1, 5, tmp_path / "again", "train", workers=1)
    for name in ("train-stage3.jsonl", "manifest.json"):
        assert (run.out_dir / name).read_bytes() == (again.out_dir / name).read_bytes(), name


def test_every_kept_trajectory_is_verified_and_replays(run):
    samples = sy.read_samples(run.out_dir / "train-stage3.jsonl")
    assert {s["skill"] for s in samples} == set(TRAIN_BUG_SKILLS)
    manifest = run.manifest
    assert manifest["stage3"]["kept"] == len(samples) == manifest["counts"]["by_stage"]["3"]
    for sample in samples:
        messages = sample["messages"]
        assert messages[0] == {"role": "system", "content": SYSTEM}
        roles = [m["role"] for m in messages[1:]]
        assert roles == ["user", "assistant"] * (len(roles) // 2) and 3 <= len(roles) // 2 <= 6
        assert parse(messages[-1]["content"]).kind == "submit"
        assert [parse(m["content"]).kind for m in messages if m["role"] == "assistant"][-2] == "test"
        assert "exit code 1" in messages[1]["content"] and "/tmp" not in json.dumps(messages)
        assert s3.trajectory_tokens(messages) <= s3.MAX_TRAJECTORY_TOKENS
        report = sample["reference"]["answer"]
        assert messages[-1]["content"].startswith(report.rstrip("\n"))
        assert ck.check(report, sample["reference"]["checks"]).passed
        assert sample["reference"]["tests_before_exit"] != 0 and sample["reference"]["tests_after_exit"] == 0
        replayed = s3.replay(sample)
        assert replayed.tests_failed_at_start and replayed.tests_pass_at_end
        assert replayed.observations_match, replayed.mismatches


def test_a_broken_policy_step_is_discarded_and_counted(lib, tmp_path, monkeypatch):
    real_plan = s3.plan

    def wrong_fix(task, steps, report, rng):
        made = real_plan(task, steps, report, rng)
        edit = made.steps[1]
        search = edit.block.split("<<<<<<< SEARCH\n", 1)[1].split("\n=======", 1)[0]
        broken = s3.Step(edit.thought, edit.block.replace(
            edit.block.split("=======\n", 1)[1].split("\n>>>>>>> REPLACE", 1)[0], search))  # edits nothing
        return s3.Plan(made.task_text, [made.steps[0], broken, *made.steps[2:]])

    monkeypatch.setattr(s3, "plan", wrong_fix)
    result = sy.synth(lib, (3,), 1, 5, tmp_path / "out", "train")
    assert result.files == {"train-stage3.jsonl": 0}
    stage3 = result.manifest["stage3"]
    # an edit that changes nothing is refused by the tool ("no change"), so the plan fails at that step
    assert stage3["kept"] == 0 and stage3["unverified"] == {"edit-failed": stage3["trajectories_run"]}
    assert stage3["trajectories_run"] == 2 * len(TRAIN_BUG_SKILLS)  # n first, then n replacements each
    assert result.manifest["discards"]["by_reason"]["stage3/edit-failed"] == stage3["trajectories_run"]
    assert stage3["skills_short"] == sorted(TRAIN_BUG_SKILLS)


def test_two_actions_in_one_reply_is_a_format_error(lib, tmp_path, monkeypatch):
    real_plan = s3.plan

    def chatty(task, steps, report, rng):
        made = real_plan(task, steps, report, rng)
        first = made.steps[0]
        return s3.Plan(made.task_text, [s3.Step(first.thought, first.block + "\n```test\n```"), *made.steps[1:]])

    monkeypatch.setattr(s3, "plan", chatty)
    result = sy.synth(lib, (3,), 1, 5, tmp_path / "out", "train")
    assert result.manifest["stage3"]["unverified"] == {"format-error": result.manifest["stage3"]["trajectories_run"]}


def test_heldout_skills_never_appear_in_train_files(lib, run, tmp_path):
    text = (run.out_dir / "train-stage3.jsonl").read_text(encoding="utf-8")
    assert HELDOUT_BUG_SKILL not in text and OTHER_SKILL not in text
    held = sy.synth(lib, (3,), 1, 5, tmp_path / "held", "heldout")
    samples = sy.read_samples(held.out_dir / "heldout-stage3.jsonl")
    assert {s["skill"] for s in samples} <= {HELDOUT_BUG_SKILL}
    assert held.manifest["stage3"]["bug_skills"] == 1
    for sample in samples:  # held-out trajectories run on held-out corpus code
        assert sample["reference"]["truth"]["module"] in mu.EVAL_MODULES


def test_training_reads_stage3_files(run):
    train_file, _ = stage_files(run.out_dir, None, 3)
    assert train_file == run.out_dir / "train-stage3.jsonl"
    samples = read_jsonl(train_file)
    assert samples and all(s.type == "trajectory" and s.messages[-1]["role"] == "assistant" for s in samples)


def test_plan_edits_a_unique_span():
    source = "a = 1\nx = 2\nb = 3\nx = 2\nc = 4\n"
    text, lo, hi = s3.unique_search(source, 2)
    assert source.count(text) == 1 and lo <= 2 <= hi and text.splitlines()[2 - lo] == "x = 2"


def test_normalise_drops_durations_only():
    assert s3.normalise("1 failed, 2 passed in 0.31s\n") == "1 failed, 2 passed\n"
    assert s3.normalise("3 passed in 61.20s (0:01:01)") == "3 passed"
    assert s3.normalise("took 5s in total") == "took 5s in total"


def test_stage3_refuses_without_the_sandbox(lib, tmp_path, monkeypatch):
    import sandbox

    monkeypatch.setattr(sandbox, "bwrap_works", lambda: False)
    with pytest.raises(sy.SynthError, match="bubblewrap"):
        sy.synth(lib, (1, 3), 1, 0, tmp_path / "out", "train")
    assert not (tmp_path / "out").exists()


def test_skill_docs_of_the_fixture_are_what_the_test_assumes(lib):
    docs = {read_skill_dir(p).name: read_skill_dir(p).metadata for p in lib.iterdir()}
    assert {docs[n]["split"] for n in TRAIN_BUG_SKILLS} == {"train"} and docs[HELDOUT_BUG_SKILL]["split"] == "heldout"
    assert docs[OTHER_SKILL]["subtask"] not in s3.BUG_SUBTASKS
