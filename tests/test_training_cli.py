"""`agent hypernet train|list` and agent/learn/hypernet_runs.py on a tiny model: stages chain, rows are stored,
bad inputs are refused with exit 2 and the previous good checkpoint stays as it was."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from sqlalchemy import select

from memory.db import Store
from memory.models import HypernetCheckpoint
from tests.test_skills_io import make_skill
from tests.tiny import tiny_model_dir

SKILLS = {
    "commit-style": ("Write commit subjects.", "## Rules\n\n- Start with fix: and a short summary.\n"),
    "shell-style": ("Answer with a shell block.", "## Steps\n\n1. Answer with ```bash\nls\n```\n"),
    "test-steps": ("Test first.", "## Steps\n\n1. Reproduce the failure.\n2. Locate the bug.\n3. Write the fix.\n"),
}
ANSWERS = {"commit-style": "fix: handle empty input in parser", "shell-style": "```bash\nls\n```",
           "test-steps": "1. Reproduce the failure.\n2. Locate the bug."}
FAST = ("--steps", "2", "--batch-size", "2", "--no-progress", "--rank", "2")


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_model_dir(tmp_path_factory)


def sample(skill: str, stage: int, type_: str) -> str:
    messages = [{"role": "user", "content": "Run the tests first, read the failing code."},
                {"role": "assistant", "content": ANSWERS[skill]}]
    return json.dumps({"skill": skill, "subtask": "bug-fixing", "stage": stage, "type": type_,
                       "messages": messages, "reference": ANSWERS[skill]})


def make_data(root: Path, manifest: dict | None = None) -> Path:
    """synth's layout: train-stage{1,2}.jsonl + manifest.json; the skills travel in DIR/skills."""
    root.mkdir(parents=True, exist_ok=True)
    for name, (description, body) in SKILLS.items():
        make_skill(root / "skills", name, body=body, description=description)
    (root / "train-stage1.jsonl").write_text("".join(sample(s, 1, "reconstruct") + "\n" for s in SKILLS) * 2)
    (root / "train-stage2.jsonl").write_text("".join(sample(s, 2, "qa") + "\n" for s in SKILLS) * 2)
    (root / "manifest.json").write_text(json.dumps(manifest or {"format_version": 1}))
    return root


def rows(db: str) -> list[HypernetCheckpoint]:
    with Store(db).session() as s:
        return list(s.scalars(select(HypernetCheckpoint).order_by(HypernetCheckpoint.id)))


def test_train_all_stages_chains_and_registers(cli, tmp_path, tiny):
    db, data, out = f"sqlite:///{tmp_path / 's.db'}", make_data(tmp_path / "data"), tmp_path / "ck" / "hn.safetensors"
    res = cli("hypernet", "train", "--stage", "all", "--data", str(data), "--model", tiny, "--db", db,
              "--out", str(out), "--json", *FAST)
    assert res.code == 0, res.err
    stages = json.loads(res.out)["stages"]
    assert [s["stage"] for s in stages] == [1, 2, 3] and "no train-stage3.jsonl" in stages[2]["skipped"]
    one, two = stages[0], stages[1]
    assert two["parent_id"] == one["checkpoint_id"]  # stage 2 starts from stage 1's checkpoint
    assert one["metrics"]["steps"] == 2 and one["metrics"]["val_loss"] is not None  # one skill held out
    assert one["data"]["val_skills"] == 1 and one["data"]["train_skills"] == 2
    assert one["metrics"]["skills_encoded"] == 3 and two["metrics"]["skills_encoded"] == 0  # once per run
    assert Path(one["path"]).name == "hn.stage1.safetensors" and out.read_bytes() == Path(two["path"]).read_bytes()
    saved = rows(db)
    assert [(r.stage, r.status) for r in saved] == [("1", "candidate"), ("2", "candidate")]
    assert saved[1].parent_id == saved[0].id and len(saved[0].data_manifest_hash) == 64
    assert saved[0].config["train"]["kd_weight"] == 0.5 and saved[1].config["train"]["kd_weight"] == 0.0
    assert saved[0].config["hypernet"]["rank"] == 2 and "val_loss" in saved[0].metrics
    listed = json.loads(cli("hypernet", "list", "--db", db, "--json").out)
    assert [r["id"] for r in listed] == [saved[1].id, saved[0].id]

    # checkpoints load like the shipped one, in float32, from float16 files
    from hypernet.checkpoint import load_hypernet

    hn = load_hypernet(out, base_model_id=tiny)
    assert hn.dtype == torch.float32 and hn.config.rank == 2


def test_a_later_stage_starts_from_the_stored_checkpoint(cli, tmp_path, tiny, monkeypatch):
    db, data, out = f"sqlite:///{tmp_path / 's.db'}", make_data(tmp_path / "data"), tmp_path / "hn.safetensors"
    missing = cli("hypernet", "train", "--stage", "2", "--data", str(data), "--model", tiny, "--db", db, *FAST)
    assert missing.code == 2 and "--stage 1" in missing.err
    assert cli("hypernet", "train", "--stage", "1", "--data", str(data), "--model", tiny, "--db", db,
               "--out", str(out), *FAST).code == 0
    import agent.learn.hypernet_runs as training
    from hypernet.checkpoint import load_hypernet

    seen = {}
    real_train = training.train

    def spy(base, hn, *args, **kwargs):
        seen["start"] = {k: v.clone() for k, v in hn.state_dict().items()}
        return real_train(base, hn, *args, **kwargs)

    monkeypatch.setattr(training, "train", spy)
    res = cli("hypernet", "train", "--stage", "2", "--data", str(data), "--model", tiny, "--db", db,
              "--out", str(tmp_path / "elsewhere.safetensors"), "--json", *FAST)
    assert res.code == 0, res.err
    stage1 = load_hypernet(tmp_path / "hn.stage1.safetensors").state_dict()
    assert all(torch.equal(seen["start"][k], stage1[k]) for k in stage1)
    two = json.loads(res.out)["stages"][0]
    assert two["parent_id"] == rows(db)[0].id and two["data"]["started_from"].endswith("hn.stage1.safetensors")


def test_bad_inputs_exit_2_and_leave_the_good_checkpoint(cli, tmp_path, tiny):
    db, out = f"sqlite:///{tmp_path / 's.db'}", tmp_path / "hn.safetensors"
    data = make_data(tmp_path / "data")
    args = ("hypernet", "train", "--model", tiny, "--db", db, "--out", str(out), *FAST)
    assert cli(*args, "--stage", "1", "--data", str(data)).code == 0
    good = out.read_bytes()
    n_rows = len(rows(db))

    def refused(*extra: str, match: str) -> None:
        res = cli(*args, *extra)
        assert res.code == 2, res.err
        assert match in res.err.replace("\n", " "), res.err
        assert out.read_bytes() == good and len(rows(db)) == n_rows

    other_model = make_data(tmp_path / "other-model", {"base_model": "some-other-model"})
    refused("--stage", "1", "--data", str(other_model), match="made for base model 'some-other-model'")
    other_tok = make_data(tmp_path / "other-tok", {"tokenizer": "0123456789abcdef"})
    refused("--stage", "1", "--data", str(other_tok), match="another tokenizer")

    from hypernet import Hypernetwork, HypernetConfig, save_hypernet
    from transformers import AutoModelForCausalLM

    foreign = Hypernetwork.for_model(AutoModelForCausalLM.from_pretrained(tiny), HypernetConfig(rank=2), "other-base")
    save_hypernet(foreign, tmp_path / "foreign.safetensors")
    refused("--stage", "2", "--data", str(data), "--init", str(tmp_path / "foreign.safetensors"),
            match="trained for base model 'other-base'")
    (tmp_path / "broken.safetensors").write_bytes(good[: len(good) // 2])
    refused("--stage", "2", "--data", str(data), "--init", str(tmp_path / "broken.safetensors"), match="corrupted")
    refused("--stage", "1", "--data", str(tmp_path / "nowhere"), match="no such folder")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "train-stage1.jsonl").write_text('{"skill": "commit-style"}\n')
    refused("--stage", "1", "--data", str(tmp_path / "bad"), match="'messages' list")
    (tmp_path / "bad" / "train-stage1.jsonl").write_text(sample("commit-style", 1, "qa") + "\n")
    refused("--stage", "1", "--data", str(tmp_path / "bad"), match="no text for skill(s) commit-style")


def test_an_interrupted_run_resumes_from_the_cli(cli, tmp_path, tiny):
    from agent.runtime.base_model import load_model
    from agent.learn.hypernet_runs import TrainOptions, run_training, stage_paths
    from hypernet import HypernetConfig
    from hypernet.trainstate import load_state

    db, data, out = f"sqlite:///{tmp_path / 's.db'}", make_data(tmp_path / "data"), tmp_path / "hn.safetensors"
    opts = TrainOptions(stages=(1, 2), data=data, out=out, steps=4, hypernet=HypernetConfig(rank=2, alpha=4.0),
                        train={"batch_size": 2, "save_every": 1}, progress=False)
    first = run_training(Store(db), load_model(tiny), opts, stop_at=2)  # "crashes" after step 2 of stage 1
    assert [o.finished for o in first] == [False] and rows(db) == [] and not out.exists()
    assert load_state(stage_paths(out, 1)[1]).step == 2
    res = cli("hypernet", "train", "--stage", "all", "--data", str(data), "--model", tiny, "--db", db,
              "--out", str(out), "--resume", "--steps", "4", "--batch-size", "2", "--rank", "2", "--no-progress",
              "--json")
    assert res.code == 0, res.err
    one, two = json.loads(res.out)["stages"][:2]
    assert one["metrics"]["steps"] == 4 and one["metrics"]["first_loss"] == first[0].metrics["first_loss"]
    assert two["parent_id"] == one["checkpoint_id"] and out.is_file()


def test_runs_sharing_skill_states_encode_each_skill_once_and_train_the_same(tmp_path, tiny):
    """The ablation bench shares frozen encoder states between runs: the second run must encode
    nothing and reach exactly the weights a run with its own states reaches."""
    from agent.runtime.base_model import load_model
    from agent.learn.hypernet_runs import TrainOptions, run_training
    from hypernet import HypernetConfig

    data, loaded = make_data(tmp_path / "data"), load_model(tiny)

    def run(name: str, states: dict | None):
        opts = TrainOptions(stages=(1,), data=data, out=tmp_path / name / "hn.safetensors", steps=2,
                            hypernet=HypernetConfig(rank=2, alpha=4.0), train={"batch_size": 2}, progress=False,
                            save_dtype="float32")
        return run_training(Store(f"sqlite:///{tmp_path / (name + '.db')}"), loaded, opts, skill_states=states)[0]

    shared: dict = {}
    first, second, alone = run("a", shared), run("b", shared), run("c", None)
    assert first.metrics["skills_encoded"] == 3 and len(shared) == 3
    assert second.metrics["skills_encoded"] == 0 and alone.metrics["skills_encoded"] == 3
    assert Path(second.path).read_bytes() == Path(alone.path).read_bytes()


def test_replay_mixes_the_previous_stages_samples_into_a_stage(cli, tmp_path, tiny):
    """Stage 3 with --replay-ratio: its trajectories plus a seeded draw of stage 2's samples (from
    another folder), recorded in the row; a folder without the previous stage's file is refused."""
    db, prev = f"sqlite:///{tmp_path / 's.db'}", make_data(tmp_path / "data")
    s3 = tmp_path / "s3"
    s3.mkdir()
    (s3 / "train-stage3.jsonl").write_text("".join(sample(s, 3, "trajectory") + "\n" for s in ("commit-style",
                                                                                                "shell-style")))
    (s3 / "heldout-stage3.jsonl").write_text(sample("test-steps", 3, "trajectory") + "\n")

    def train(*extra: str, out: str = "hn.safetensors"):
        return cli("hypernet", "train", "--stage", "3", "--data", str(s3), "--library", str(prev / "skills"),
                   "--init", "scratch", "--model", tiny, "--db", db, "--out", str(tmp_path / out), "--json",
                   *FAST, *extra)

    plain, mixed = train(out="plain.safetensors"), train("--replay-ratio", "1.5", "--replay-data", str(prev))
    assert plain.code == 0 and mixed.code == 0, mixed.err
    plain_data, mixed_data = (json.loads(r.out)["stages"][0]["data"] for r in (plain, mixed))
    assert "replayed" not in plain_data and plain_data["train_examples"] == 2
    assert mixed_data["replayed"] == 3 and mixed_data["train_examples"] == 5  # round(1.5 x 2) stage-2 samples
    assert mixed_data["replay_file"].endswith("train-stage2.jsonl")
    hashes = [r.data_manifest_hash for r in rows(db)]
    assert hashes[0] != hashes[1]  # the replayed file is part of what the run learned from

    missing = train("--replay-ratio", "1", "--replay-data", str(s3), out="none.safetensors")
    assert missing.code == 2 and "no train-stage2.jsonl to replay" in missing.err
    assert not (tmp_path / "none.safetensors").exists()


def test_the_replayed_draw_is_seeded(tmp_path):
    from agent.learn.hypernet_runs import Replay, replay_samples

    data = make_data(tmp_path / "data")

    def draw(seed: int) -> list[str]:
        return [s.skill for s in replay_samples(Replay(2.0, seed=seed), 3, data, 2)[0]]

    assert draw(0) == draw(0) and len(draw(0)) == 4
    assert any(draw(0) != draw(s) for s in range(1, 6))
    assert replay_samples(Replay(1.0), 1, data, 5) == ([], None)  # stage 1 has nothing before it
