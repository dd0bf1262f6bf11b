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


def test_a_policy_started_ema_acts_at_full_strength_beneath_scaled_skills_and_decays_by_beta(env, monkeypatch):
    import pytest
    import torch

    from agent.evolve import accumulate
    from agent.evolve.context import EvolveContext, FoldableAdapter
    from agent.runtime import skill_context
    from hypernet.lora import LoraWeights
    from hypernet.targets import Target
    from memory import adapters as adapter_repo
    from memory.errors import StoreError
    from memory.seed import ensure_seeded

    tmp, db, _ = env
    store = Store(db)
    ensure_seeded(store)
    q, k = (Target(0, m, f"model.layers.0.self_attn.{m}", 8, 8) for m in ("q_proj", "k_proj"))

    def lora(seed, targets):
        g = torch.Generator().manual_seed(seed)
        return LoraWeights("m", targets, {t.key: (torch.randn(2, 8, generator=g), torch.randn(8, 2, generator=g))
                                          for t in targets})

    class Converted:  # skill adapters touch q only, the policy every module
        def __init__(self, seed):
            self.lora, self.adapter_id = lora(seed, (q,)), seed

    monkeypatch.setattr(skill_context, "convert_skill", lambda store, loaded, handle, doc, sid: Converted(sid))
    loaded = type("Loaded", (), {"name": "m"})()
    _, skills = skill_context.build(store, "parametric", "fix the failing test", 2, loaded, object(), 0.3)
    policy = lora(99, (q, k))
    assert skill_context.ema_policy(store, "m") is None
    info = accumulate.start_from_policy(store, policy, "shipped")
    assert (info.op, info.policy, info.row()["skills"]) == ("init", 1.0, 0)
    assert skill_context.ema_policy(store, "m") == (info.version, 1.0)
    ctx, merged = skill_context.build(store, "parametric", "fix the failing test", 2, loaded, object(), 0.3)
    # the skills at 0.3 (as beneath a separate policy), the EMA holding the policy at 1
    assert torch.allclose(merged.delta(q.key), skills.delta(q.key) + policy.delta(q.key), atol=1e-5)
    assert torch.allclose(merged.delta(k.key), policy.delta(k.key), atol=1e-5)
    ema_entry = ctx.active[-1]
    assert ema_entry["policy"] == 1.0 and "scale" not in ema_entry
    with pytest.raises(StoreError, match="already exists"):
        accumulate.start_from_policy(store, policy, "again")
    # a fold of a q-only skill scales the policy by β everywhere, k included, and its share follows
    skill_id = ctx.active[0]["adapter_id"]
    with store.session() as s:
        assert accumulate.fold(s, EvolveContext(store), skill_id, FoldableAdapter(Converted(skill_id).lora, None,
                                                                                  None), 0.9, 64) is not None
    version, share = skill_context.ema_policy(store, "m")
    assert version == info.version + 1 and share == pytest.approx(0.9)
    with store.session() as s:
        latest = accumulate.load_version(adapter_repo.latest_ema(s, "m"))
    assert torch.allclose(latest.delta(k.key), 0.9 * policy.delta(k.key), atol=1e-5)


def test_ema_init_refuses_a_store_that_already_has_an_ema_in_one_line(cli, env):
    import torch

    from agent.evolve import accumulate
    from hypernet.lora import LoraWeights
    from hypernet.targets import Target

    _, db, _ = env
    t = Target(0, "q_proj", "model.layers.0.self_attn.q_proj", 8, 8)
    accumulate.start_from_policy(Store(db), LoraWeights("smollm2-135m-instruct", (t,), {
        t.key: (torch.ones(1, 8), torch.ones(8, 1))}), "a test policy")
    r = cli("adapters", "ema-init", "--db", db)  # refused before the model loads
    assert r.code == 2 and r.err.strip().startswith("error:") and "already exists (EMA version 1)" in r.err
    assert len(r.err.strip().splitlines()) == 1
    r = cli("adapters", "ema-init", "--policy", "none", "--db", db)
    assert r.code == 2 and "no policy to start from" in r.err


# --- export: folders that other tools load as they are ---------------------------------------------------

def _store_random(db, model_dir, rank, base_model, kind="merge", **fields):
    """A random nonzero adapter on the tiny model's q/v, stored as `kind` (an untrained hypernet gives B = 0)."""
    import torch
    from transformers import AutoModelForCausalLM

    from agent.runtime.skill_adapters import store_lora
    from hypernet import find_targets
    from hypernet_fixtures import random_lora

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    targets = find_targets(model, ("q_proj", "v_proj"))
    ranks = rank if isinstance(rank, int) else {t.key: rank(t) for t in targets}
    lora = random_lora(targets, rank=ranks, dtype=torch.float32, base_model=base_model, scale=0.3)
    return model, lora, store_lora(Store(db), lora, kind, **fields)


def test_peft_export_loads_in_peft_with_a_model_card_and_readable_modes(cli, env):
    import os
    import stat
    from pathlib import Path

    import torch
    from peft import AutoPeftModelForCausalLM, PeftModel
    from transformers import AutoModelForCausalLM

    from hypernet import apply_lora
    from memory import evolution as evo_repo
    from memory import skills as skill_repo

    tmp, db, tiny = env
    assert cli("skills", "import", str(tmp / "lib"), "--db", db).code == 0
    with Store(db).session() as s:
        skill = skill_repo.get(s, "fix-bounds")
        sid, content_hash = skill.id, skill.content_hash
        cid = evo_repo.checkpoint_by_sha(s, "ab" * 32, name="hypernet-stage3", base_model=tiny, config={},
                                         path=None, status="accepted").id
    model, lora, aid = _store_random(db, tiny, lambda t: 24 if t.layer == 0 else 4, tiny, kind="skill",
                                     skill_id=sid, hypernet_id=cid, cache_key=f"{content_hash}:ckpt-ab",
                                     meta={"skill": "fix-bounds", "trained_hypernet": True})
    old = os.umask(0o022)  # what the modes follow, as mkdir's do
    try:
        r = cli("adapters", "export", str(aid), str(tmp / "out"), "--db", db, "--json")
    finally:
        os.umask(old)
    assert r.code == 0, r.err
    out = tmp / "out"
    assert json.loads(r.out)["vllm_max_lora_rank"] == 32
    assert stat.S_IMODE(out.stat().st_mode) == 0o755
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()} == {
        "adapter_config.json": 0o644, "adapter_model.safetensors": 0o644, "README.md": 0o644}
    cfg = json.loads((out / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == str(Path(tiny).resolve())  # a folder others can load from anywhere
    card = (out / "README.md").read_text()
    for expected in ("skill `fix-bounds`", content_hash, "`hypernet-stage3`", "ab" * 32, "| q_proj | 0-1 (2) | 4, 24 |",
                     f"--enable-lora --max-lora-rank 32 --lora-modules fix-bounds={out}", "--format gguf"):
        assert expected in card, expected
    x = torch.randint(0, 100, (1, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), apply_lora(model, lora):
        want = model(x).logits
    peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny), str(out)).eval()
    auto = AutoPeftModelForCausalLM.from_pretrained(str(out)).eval()  # finds the base from the config alone
    with torch.no_grad():
        plain = model(x).logits
        for loaded in (peft_model, auto):
            got = loaded(x).logits
            assert torch.allclose(got, want, atol=1e-4), float((got - want).abs().max())
    assert not torch.allclose(plain, want, atol=1e-3)  # the adapter really changes the model


def test_an_adapter_of_the_embedded_model_names_its_hub_id(cli, env):
    from peft import PeftConfig

    tmp, db, tiny = env
    # the embedded model's shapes are not needed: a PEFT export is not checked against the base
    _, _, aid = _store_random(db, tiny, 24, "smollm2-135m-instruct", meta={"inputs": [1, 2], "weights": [0.5, 0.5]})
    r = cli("adapters", "export", str(aid), str(tmp / "out"), "--format", "peft", "--db", db)
    assert r.code == 0, r.err
    hub = "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert json.loads((tmp / "out" / "adapter_config.json").read_text())["base_model_name_or_path"] == hub
    # what AutoPeftModelForCausalLM reads to fetch the base (no network here: the field is what matters)
    assert PeftConfig.from_pretrained(str(tmp / "out")).base_model_name_or_path == hub
    card = (tmp / "out" / "README.md").read_text()
    assert f"base_model: {hub}" in card and "merge of adapters [1, 2]" in card
    assert f"vllm serve {hub} --enable-lora --max-lora-rank 32 --lora-modules adapter-{aid}=" in card


@pytest.mark.parametrize("rank,want", [(1, 8), (8, 8), (9, 16), (24, 32), (64, 64), (300, 320), (512, 512),
                                       (513, None)])
def test_vllm_max_lora_rank_rounds_up_to_a_value_vllm_accepts(rank, want):
    from agent.runtime.adapter_export import vllm_max_lora_rank

    assert vllm_max_lora_rank(rank) == want


def test_export_bad_input_is_one_line_exit_2_and_writes_nothing(cli, env):
    from agent.runtime.base_model import embedded_gguf

    tmp, db, tiny = env
    cli("skills", "import", str(tmp / "lib"), "--db", db)
    aid = str(json.loads(cli("convert", "fix-bounds", "--model", tiny, "--db", db, "--json").out)["adapter_id"])
    (tmp / "full").mkdir()
    (tmp / "full" / "keep.txt").write_text("x")
    new = str(tmp / "new")
    cases = [
        (("adapters", "export", aid, new, "--format", "onnx"), "is not one of 'peft', 'gguf'"),
        (("adapters", "export", "999", new), "no adapter with id 999"),
        (("adapters", "export", "--db", db), "Missing argument 'adapter_id'"),
        (("adapters", "export", aid, str(tmp / "full")), "is not an empty folder"),
        (("adapters", "export", aid, str(tmp / "lib" / "fix-bounds" / "SKILL.md")), "is not an empty folder"),
        (("adapters", "export", aid, new, "--format", "gguf"), "not an embedded model: give its GGUF with --base-gguf"),
        (("adapters", "export", aid, new, "--format", "gguf", "--base-gguf", str(tmp / "no.gguf")), "does not exist"),
        (("adapters", "export", aid, new, "--format", "gguf", "--base-gguf",
          str(embedded_gguf("smollm2-135m-instruct"))), "adapter gives"),  # a GGUF of another model
        (("convert", "fix-bounds", "--model", tiny, "--out", str(tmp / "full")), "is not an empty folder"),
    ]
    def files():  # SQLite's -wal/-shm side files come and go with connections other tests left open
        return sorted(str(p) for p in tmp.rglob("*") if not p.name.endswith(("-wal", "-shm", "-journal")))

    before = files()
    for args, match in cases:
        r = cli(*args, *(() if "--db" in args else ("--db", db)))
        assert r.code == 2 and len(r.err.strip().splitlines()) == 1 and match in r.err, (args, r.err)
        assert files() == before, args
    (tmp / "empty").mkdir()  # an empty folder is as good as a new one
    assert cli("adapters", "export", aid, str(tmp / "empty"), "--db", db).code == 0
    assert (tmp / "empty" / "adapter_config.json").is_file()
