"""`agent hypernet baseline multitask|oracle` on a tiny model: the LoRA learns, the PEFT folder loads
with the logits our hooks give, an oracle sees only its own skill's rows, bad input writes nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.test_training_cli import make_data, sample
from tests.tiny import tiny_model_dir

pytestmark = pytest.mark.usefixtures("one_thread")
FAST = ("--batch-size", "2", "--no-progress", "--json")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_model_dir(tmp_path_factory)


def with_heldout(root: Path, counts: dict[str, int]) -> Path:
    """make_data's folder plus a heldout-stage2.jsonl with `counts[skill]` rows per skill."""
    make_data(root)
    rows = [sample(skill, 2, "task") for skill, n in counts.items() for _ in range(n)]
    (root / "heldout-stage2.jsonl").write_text("".join(r + "\n" for r in rows))
    return root


def test_multitask_learns_and_the_peft_folder_gives_our_logits(cli, tmp_path, tiny):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from hypernet.inject import apply_lora
    from hypernet.peft_io import import_peft

    data, out = make_data(tmp_path / "data"), tmp_path / "out" / "multitask"
    # validating on the training rows themselves: the adapter must lower their loss below the base's
    (tmp_path / "val").mkdir()
    (tmp_path / "val" / "heldout-stage2.jsonl").write_text((data / "train-stage2.jsonl").read_text())
    res = cli("hypernet", "baseline", "multitask", "--data", str(data), "--val-data", str(tmp_path / "val"),
              "--out", str(out), "--model", tiny, "--steps", "40", "--lr", "3e-2", *FAST)
    assert res.code == 0, res.err
    report = json.loads(res.out)
    assert report["steps"] == 40 and report["tokens"] > 0 and report["data"]["skills"] == 3
    # a random 64-wide model moves little through q/v alone: about 6.0 -> 5.7 nats on these rows
    assert report["final_loss"] < report["first_loss"]
    assert report["val_loss"] < report["val_loss_base"] - 0.15
    assert report["options"]["rank"] == 8 and report["options"]["target_modules"] == ["q_proj", "v_proj"]
    saved = json.loads((out / "report.json").read_text())
    assert saved["tokens"] == report["tokens"] and len(saved["losses"]) == 40

    ids = torch.tensor([[5, 17, 42, 7, 99, 3, 250, 11]])
    base = AutoModelForCausalLM.from_pretrained(tiny).eval()
    with torch.no_grad():
        plain = base(input_ids=ids).logits
        with apply_lora(base, import_peft(out)):
            ours = base(input_ids=ids).logits
        peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny), str(out)).eval()
        theirs = peft(input_ids=ids).logits
    assert (ours - plain).abs().max() > 1e-3  # the adapter does something
    torch.testing.assert_close(theirs, ours, atol=1e-4, rtol=1e-4)


def test_oracle_trains_only_on_the_named_skill(cli, tmp_path, tiny, monkeypatch):
    import agent.learn.baselines as baselines

    data = with_heldout(tmp_path / "data", {"commit-style": 3, "shell-style": 2, "test-steps": 1})
    out = tmp_path / "oracle"
    seen: dict[str, list[str]] = {}
    real = baselines.train_lora

    def spy(base, examples, *args, desc, **kwargs):
        seen[desc] = [e.skill for e in examples]
        return real(base, examples, *args, desc=desc, **kwargs)

    monkeypatch.setattr(baselines, "train_lora", spy)
    res = cli("hypernet", "baseline", "oracle", "--data", str(data), "--skill", "commit-style", "--skill",
              "test-steps", "--out", str(out), "--model", tiny, "--steps", "3", *FAST)
    assert res.code == 0, res.err
    assert sorted(seen.values()) == [["commit-style"] * 3, ["test-steps"]]
    assert sorted(p.name for p in out.iterdir()) == ["commit-style", "report.json", "test-steps"]
    summary = json.loads(res.out)
    assert summary["trained"] == ["commit-style", "test-steps"]
    one = summary["skills"]["commit-style"]
    assert one["data"]["examples"] == 3 and one["steps"] == 3 and one["seconds_to_adapter"] > 0
    assert (out / "commit-style" / "adapter_config.json").is_file()

    # a later run adds a skill beside them; the folder's report keeps all three
    res = cli("hypernet", "baseline", "oracle", "--data", str(data), "--skill", "shell-style", "--out", str(out),
              "--model", tiny, "--steps", "2", *FAST)
    assert res.code == 0, res.err
    assert seen["oracle 1/1 shell-style"] == ["shell-style"] * 2
    assert sorted(json.loads((out / "report.json").read_text())["skills"]) == ["commit-style", "shell-style",
                                                                              "test-steps"]


def test_bad_input_exits_2_and_writes_nothing(cli, tmp_path, tiny):
    data = with_heldout(tmp_path / "data", {"commit-style": 2})
    parent = tmp_path / "outs"
    parent.mkdir()

    def refused(*args: str, match: str) -> None:
        res = cli("hypernet", "baseline", *args, "--model", tiny, "--steps", "1", "--no-progress")
        assert res.code == 2, (res.out, res.err)
        assert match in res.err.replace("\n", " "), res.err
        assert list(parent.iterdir()) == [], "a refused run left files behind"

    out = str(parent / "x")
    refused("multitask", "--data", str(tmp_path / "nowhere"), "--out", out, match="no such folder")
    (tmp_path / "empty").mkdir()
    refused("multitask", "--data", str(tmp_path / "empty"), "--out", out, match="no train-stage2.jsonl")
    other = make_data(tmp_path / "other", {"base_model": "some-other-model"})
    refused("multitask", "--data", str(other), "--out", out, match="made for base model 'some-other-model'")
    refused("multitask", "--data", str(data), "--out", out, "--epochs", "2", match="not both")
    refused("oracle", "--data", str(data), "--out", out, "--skill", "no-such-skill", match="no samples for skill")
    refused("oracle", "--data", str(data), "--out", out, match="--skill NAME")
    refused("oracle", "--data", str(data), "--out", out, "--all", "--skill", "commit-style", match="--skill NAME")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "heldout-stage2.jsonl").write_text('{"skill": "commit-style"}\n')
    refused("oracle", "--data", str(tmp_path / "bad"), "--out", out, "--all", match="'messages' list")

    # an existing output is kept unless --overwrite, which replaces it whole
    args = ("multitask", "--data", str(data), "--out", out, "--model", tiny, "--steps", "1", "--no-progress")
    assert cli("hypernet", "baseline", *args).code == 0
    first = (parent / "x" / "adapter_model.safetensors").read_bytes()
    res = cli("hypernet", "baseline", *args)
    assert res.code == 2 and "already exists" in res.err
    assert (parent / "x" / "adapter_model.safetensors").read_bytes() == first
    assert cli("hypernet", "baseline", *args, "--overwrite", "--lr", "1e-2").code == 0
    assert (parent / "x" / "adapter_model.safetensors").read_bytes() != first
    assert sorted(p.name for p in parent.iterdir()) == ["x"]  # no temp folders left
