"""`agent convert` and `agent adapters` end to end on a tiny random model."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import text

from memory.db import Store
from tests.test_skills_io import make_skill
from tests.tiny import tiny_model_dir


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_model_dir(tmp_path_factory)


@pytest.fixture
def env(tmp_path, tiny):
    db = f"sqlite:///{tmp_path / 's.db'}"
    make_skill(tmp_path / "lib", "fix-bounds", body="1. Run the tests.\n2. Check every loop bound.\n")
    make_skill(tmp_path / "lib", "name-tests", body="Name tests test_<unit>_<condition>.\n")
    return tmp_path, db, tiny


def test_convert_caches_and_adapters_commands(cli, env):
    tmp, db, tiny = env
    assert cli("skills", "import", str(tmp / "lib"), "--db", db).code == 0
    first = cli("convert", "fix-bounds", "--model", tiny, "--db", db, "--json")
    assert first.code == 0, first.err
    data = json.loads(first.out)
    assert data["cached"] is False and data["trained_hypernet"] is False
    assert data["timings_ms"]["tokens"] > 0 and data["targets"] == 4  # q/v in 2 layers
    again = json.loads(cli("convert", "fix-bounds", "--model", tiny, "--db", db, "--json").out)
    assert again["cached"] is True and again["adapter_id"] == data["adapter_id"]
    other = json.loads(cli("convert", str(tmp / "lib" / "name-tests"), "--model", tiny, "--db", db,
                           "--out", str(tmp / "peft"), "--json").out)
    assert (tmp / "peft" / "adapter_config.json").is_file()
    listed = json.loads(cli("adapters", "list", "--db", db, "--json").out)
    assert {a["skill"] for a in listed} == {"fix-bounds", "name-tests"}
    shown = json.loads(cli("adapters", "show", str(data["adapter_id"]), "--db", db, "--json").out)
    assert shown["total_norm"] == 0.0  # untrained hypernetwork: B is zero, the adapter changes nothing
    merged = cli("adapters", "merge", str(data["adapter_id"]), str(other["adapter_id"]), "--db", db, "--json")
    assert json.loads(merged.out)["rank"] == 16
    assert cli("adapters", "export", str(data["adapter_id"]), str(tmp / "exp"), "--db", db).code == 0
    imported = cli("adapters", "import", str(tmp / "exp"), "--base-model", tiny, "--db", db, "--json")
    assert imported.code == 0, imported.err


def test_adapter_bad_input(cli, env):
    tmp, db, tiny = env
    cli("skills", "import", str(tmp / "lib"), "--db", db)
    aid = json.loads(cli("convert", "fix-bounds", "--model", tiny, "--db", db, "--json").out)["adapter_id"]
    r = cli("adapters", "merge", str(aid), str(aid), "-w", "0", "-w", "0", "--db", db)
    assert r.code == 2 and "zero" in r.err
    r = cli("adapters", "export", str(aid), "/no/such/parent/x", "--db", db)
    assert r.code == 2 and "does not exist" in r.err
    r = cli("adapters", "show", "999", "--db", db)
    assert r.code == 2 and "no adapter" in r.err
    r = cli("convert", "no-such-skill", "--model", tiny, "--db", db)
    assert r.code == 2 and "no skill named" in r.err
    store = Store(db)
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE adapters SET blob = :b WHERE id = :i"), {"b": b"garbage", "i": aid})
    r = cli("adapters", "show", str(aid), "--db", db)
    assert r.code == 2 and "corrupted" in r.err


def test_parametric_solve_runs_with_tiny_model(cli, env):
    """The whole parametric path (retrieve, convert, merge, apply, loop, store) on a tiny model."""
    tmp, db, tiny = env
    from pathlib import Path

    example = Path(__file__).resolve().parent.parent / "examples" / "buggy-stats"
    cli("skills", "import", str(tmp / "lib"), "--db", db)
    r = cli("solve", str(example), "fix the failing test", "--model", tiny, "--db", db, "--json",
            "--max-steps", "2", "--max-new-tokens", "16", "--top-k", "2")
    assert r.code == 0, r.err
    report = json.loads(r.out)
    assert {s["name"] for s in report["active_skills"]} == {"fix-bounds", "name-tests"}
    assert abs(sum(s["weight"] for s in report["active_skills"]) - 1.0) < 1e-3
    assert not report["tests_before"]["passed"] and not report["verified"]
    shown = json.loads(cli("trajectories", "show", str(report["trajectory_id"]), "--db", db, "--json").out)
    assert shown["mode"] == "parametric" and shown["messages"][0]["role"] == "system"


@pytest.mark.parametrize("case,match", [
    ("nan", "holds NaN or infinite values"),
    ("wide", "do not fit the base model's"),
    ("layer", "layer 7 does not exist"),
    ("module", "unknown module 'z_proj'"),
])
def test_import_checks_the_adapter_against_the_base_model(cli, env, case, match):
    import torch
    from safetensors.torch import load_file, save_file

    tmp, db, tiny = env
    cli("skills", "import", str(tmp / "lib"), "--db", db)
    cli("convert", "fix-bounds", "--model", tiny, "--out", str(tmp / "peft"), "--db", db)
    weights = tmp / "peft" / "adapter_model.safetensors"
    t = load_file(weights)
    q0a = next(k for k in t if ".layers.0." in k and "q_proj" in k and "lora_A" in k)
    if case == "nan":
        t[q0a][0, 0] = float("nan")
    elif case == "wide":  # an adapter made for a wider model
        t[q0a] = torch.zeros(t[q0a].shape[0], t[q0a].shape[1] + 32)
    else:
        old = "layers.0.self_attn.q_proj"
        new = "layers.7.self_attn.q_proj" if case == "layer" else "layers.0.self_attn.z_proj"
        for key in [k for k in t if old in k]:
            t[key.replace(old, new)] = t.pop(key)
    save_file(t, weights, metadata={"format": "pt"})
    before = cli("adapters", "list", "--db", db, "--json").out
    r = cli("adapters", "import", str(tmp / "peft"), "--base-model", tiny, "--db", db)
    assert r.code == 2 and len(r.err.strip().splitlines()) == 1 and match in r.err, r.err
    assert cli("adapters", "list", "--db", db, "--json").out == before


def test_skill_scale_scales_the_merged_adapter_and_is_recorded(env, monkeypatch):
    import torch

    from agent.runtime import skill_context
    from agent.runtime.skill_context import build
    from hypernet.lora import LoraWeights
    from hypernet.targets import Target
    from memory.seed import ensure_seeded

    tmp, db, _ = env
    store = Store(db)
    ensure_seeded(store)
    target = Target(0, "q_proj", "model.layers.0.self_attn.q_proj", 8, 8)

    class Converted:
        def __init__(self, seed):
            g = torch.Generator().manual_seed(seed)
            self.lora = LoraWeights("m", (target,), {target.key: (torch.randn(2, 8, generator=g),
                                                                  torch.randn(8, 2, generator=g))})
            self.adapter_id = seed

    monkeypatch.setattr(skill_context, "convert_skill", lambda store, loaded, handle, doc, sid: Converted(sid))
    loaded = type("Loaded", (), {"name": "m"})()
    full_ctx, full = build(store, "parametric", "fix the failing test", 2, loaded, object())
    ctx, scaled = build(store, "parametric", "fix the failing test", 2, loaded, object(), 0.3)
    assert torch.allclose(scaled.delta(target.key), 0.3 * full.delta(target.key), atol=1e-6)
    assert all(e["scale"] == 0.3 for e in ctx.active) and all("scale" not in e for e in full_ctx.active)
