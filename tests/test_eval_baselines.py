"""`agent eval --baseline LABEL=PATH`: fixed PEFT adapters (one for all items, or one per skill) as modes."""

from __future__ import annotations

import json

import pytest
import torch

from agent.runtime.backends import LocalChat
from agent.learn.evaluate import Request, evaluate, load_baseline, plan, skipped_counts
from agent.runtime.base_model import load_model
from agent.synth.eval_items import make_eval_items
from hypernet import HypernetError, Target, apply_lora, export_peft, find_targets
from hypernet_fixtures import random_lora
from memory.db import Store
from memory.models import EvalResult
from tests.tiny import tiny_model_dir


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    return load_model(tiny_model_dir(tmp_path_factory))


@pytest.fixture(scope="module")
def items():
    return make_eval_items(split="heldout", subtask="code-review", n=1, seed=0)[:2]


def peft_folder(loaded, folder, seed=0, base_model=None, targets=None):
    targets = targets or find_targets(loaded.model, ("q_proj", "v_proj", "down_proj"))
    lora = random_lora(targets, rank=4, seed=seed, dtype=torch.float32,
                       base_model=loaded.name if base_model is None else base_model, scale=0.5)
    export_peft(lora, folder)
    return lora


def test_single_folder_applies_to_every_skill_and_per_skill_folders_skip_the_rest(loaded, items, tmp_path):
    shared = peft_folder(loaded, tmp_path / "multi")
    (tmp_path / "oracle").mkdir()
    mine = peft_folder(loaded, tmp_path / "oracle" / items[0].skill.name, seed=1)
    (tmp_path / "oracle" / "notes").mkdir()  # not an adapter: ignored
    peft_folder(loaded, tmp_path / "oracle" / ".x.tmp-1", seed=2)  # a trainer's staging folder: ignored
    multi, oracle = load_baseline("mt", tmp_path / "multi", loaded), load_baseline("orc", tmp_path / "oracle", loaded)
    assert multi.shared is not None and set(oracle.per_skill) == {items[0].skill.name}
    assert torch.allclose(multi.lora_for("anything").delta(shared.keys[0]), shared.delta(shared.keys[0]))
    assert torch.allclose(oracle.lora_for(items[0].skill.name).delta(mine.keys[0]), mine.delta(mine.keys[0]))
    assert oracle.lora_for(items[1].skill.name) is None
    baselines = {"mt": multi, "orc": oracle}
    assert skipped_counts(items, baselines) == {"mt": 0, "orc": 1}
    jobs, _ = plan(items, loaded, None, ("none", "mt", "orc"), None, baselines)
    assert [(it.skill.name, m) for it, m in jobs] == [
        (items[0].skill.name, "none"), (items[0].skill.name, "mt"), (items[0].skill.name, "orc"),
        (items[1].skill.name, "none"), (items[1].skill.name, "mt")]


def test_baseline_answers_are_the_model_under_that_adapter(loaded, items, tmp_path):
    peft_folder(loaded, tmp_path / "multi", seed=3)
    multi = load_baseline("mt", tmp_path / "multi", loaded)
    results = evaluate(items, loaded, None, ("none", "mt"), None, max_new_tokens=8, bertscore=False,
                       batch_size=4, baselines={"mt": multi})
    chat = LocalChat(loaded.model, loaded.tokenizer, max_new_tokens=8, stop_after_block=False)
    with apply_lora(loaded.model, multi.shared, mode="merge"):
        expected = [chat.chat(Request([{"role": "user", "content": it.task.prompt}]).messages)[0] for it in items]
    assert [r.response for r in results if r.mode == "mt"] == expected
    assert {r.mode for r in results} == {"none", "mt"}


def test_foreign_or_misshapen_adapters_are_refused(loaded, tmp_path):
    peft_folder(loaded, tmp_path / "other", base_model="another/base-model")
    with pytest.raises(HypernetError, match="trained on base model 'another/base-model'"):
        load_baseline("mt", tmp_path / "other", loaded)
    wrong = [Target(0, "q_proj", "model.layers.0.self_attn.q_proj", 32, 64)]
    peft_folder(loaded, tmp_path / "shape", targets=wrong)
    with pytest.raises(HypernetError, match="does not fit"):
        load_baseline("mt", tmp_path / "shape", loaded)
    (tmp_path / "empty").mkdir()
    with pytest.raises(HypernetError, match="neither a PEFT adapter folder nor a folder of them"):
        load_baseline("mt", tmp_path / "empty", loaded)


def one_line_error(err: str, message: str) -> bool:
    """Exactly one error line, holding the message (model loading may print progress lines too)."""
    lines = [line for line in err.splitlines() if "error" in line]
    return len(lines) == 1 and lines[0].startswith("error:") and message in lines[0]


def run_eval(cli, loaded, tmp_path, *args):
    return cli("eval", "--model", loaded.name, "--db", f"sqlite:///{tmp_path / 's.db'}", "--subtask", "code-review",
               "--max-skills", "2", "--max-new-tokens", "8", "--out", str(tmp_path / "res"), *args)


def test_cli_reports_baselines_as_modes(cli, loaded, items, tmp_path):
    peft_folder(loaded, tmp_path / "multi")
    (tmp_path / "oracle").mkdir()
    peft_folder(loaded, tmp_path / "oracle" / items[0].skill.name, seed=1)
    r = run_eval(cli, loaded, tmp_path, "--mode", "none", "--baseline", f"multitask={tmp_path / 'multi'}",
                 "--baseline", f"oracle={tmp_path / 'oracle'}", "--batch-size", "3", "--json")
    assert r.code == 0, r.err
    assert "oracle: 1 of 2 items skipped" in r.err
    report = json.loads(r.out)
    assert list(report["table"]) == ["multitask", "none", "oracle"]
    assert report["table"]["multitask"]["overall"]["n"] == 2 and report["table"]["oracle"]["overall"]["n"] == 1
    assert report["skipped"] == {"multitask": 0, "oracle": 1}
    assert "judge" not in report["table"]["none"]["overall"]
    # paired differences over the items both modes answered: oracle skipped one of the two skills
    assert {k: v["n"] for k, v in report["differences"].items()} == {
        "multitask - none": 2, "oracle - none": 1, "oracle - multitask": 1}
    lo, hi = report["table"]["none"]["overall"]["check_score_ci95"]
    assert lo <= report["table"]["none"]["overall"]["check_score"] <= hi
    saved = json.loads((tmp_path / "res" / "eval_heldout.json").read_text())
    assert {it["mode"] for it in saved["items"]} == {"none", "multitask", "oracle"}
    assert saved["baselines"]["oracle"] == str(tmp_path / "oracle")
    assert (tmp_path / "res" / "eval_heldout.png").is_file()
    with Store(f"sqlite:///{tmp_path / 's.db'}").session() as s:
        assert s.query(EvalResult).filter_by(mode="oracle", subtask="overall", metric="adherence").one().n == 1


@pytest.mark.parametrize("spec, message", [
    ("multitask", "expected LABEL=PATH"),
    ("icl={multi}", "already a mode"),
    ("bad label={multi}", "use up to 16 letters"),
    ("a-very-long-baseline-label={multi}", "use up to 16 letters"),
    ("mt={tmp}/missing", "does not exist"),
    ("mt={other}", "trained on base model"),
])
def test_cli_bad_baselines_are_one_line_errors_and_write_nothing(cli, loaded, tmp_path, spec, message):
    peft_folder(loaded, tmp_path / "multi")
    peft_folder(loaded, tmp_path / "other", base_model="another/base-model")
    r = run_eval(cli, loaded, tmp_path, "--mode", "none", "--baseline",
                 spec.format(multi=tmp_path / "multi", other=tmp_path / "other", tmp=tmp_path))
    assert r.code == 2 and one_line_error(r.err, message), r.err
    assert not (tmp_path / "res").exists()
