"""Parametric mode over an endpoint (agent.runtime.served_adapter) against a fake of vLLM's adapter API on
loopback: the adapter is written, loaded under a unique name, chatted with by that name and unloaded on every
way out; a server that cannot take adapters is one line before any set-up. tests/test_vllm_server.py runs the
same against a real vLLM server when AGENT_TEST_VLLM_URL is set."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
import torch
from fake_openai import fake_vllm

from agent.runtime.endpoint import EndpointChat, EndpointError
from agent.runtime.served_adapter import combine, probe, serve_adapter
from hypernet.lora import LoraWeights
from hypernet.targets import Target
from memory import trajectories as traj_repo
from memory.db import Store
from tests.test_agent_loop import FIX
from tests.test_skills_io import make_skill
from tests.tiny import tiny_model_dir

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "buggy-stats"
HELLO = [{"role": "user", "content": "hello"}]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_model_dir(tmp_path_factory)


def lora(modules=("q_proj", "v_proj"), rank=4, layers=2, seed=0, base="m") -> LoraWeights:
    g = torch.Generator().manual_seed(seed)
    targets = [Target(i, m, f"model.layers.{i}.{'mlp' if m.endswith(('up_proj', 'down_proj')) else 'self_attn'}.{m}",
                      8, 8) for i in range(layers) for m in modules]
    return LoraWeights(base, targets, {t.key: (torch.randn(rank, 8, generator=g), torch.randn(8, rank, generator=g))
                                       for t in targets})


def test_combine_is_the_exact_sum_over_the_union_of_targets():
    policy = lora(("q_proj", "v_proj", "up_proj"), rank=3, seed=1)
    skills = lora(("q_proj", "v_proj"), rank=5, seed=2)
    both = combine([policy, skills])
    assert {t.key for t in both.targets} == {t.key for t in policy.targets}
    for t in both.targets:
        want = policy.delta(t.key) + (skills.delta(t.key) if t.key in skills.factors else 0)
        assert torch.allclose(both.delta(t.key), want, atol=1e-5)
        assert both.ranks[t.key] == (8 if t.key in skills.factors else 3)
    assert combine([skills]) is skills
    with pytest.raises(ValueError, match="different base models"):
        combine([policy, lora(base="other")])


def test_the_adapter_is_loaded_by_name_used_and_unloaded(tmp_path):
    with fake_vllm(lambda body: "hi", served="base") as (url, state):
        chat = EndpointChat(url, "base")
        probe(chat)  # the adapter routes are there
        with serve_adapter(chat, lora(), "base", folder=tmp_path) as (as_adapter, served):
            assert as_adapter.model == served.name and chat.model == "base"
            assert as_adapter.chat(HELLO)[0] == "hi"
            folder = Path(served.folder)
            mode = stat.S_IMODE(folder.stat().st_mode)
            assert folder.parent == tmp_path and mode & 0o055 == 0o055  # another user (the server) may read it
        assert state["chats"][-1]["model"] == served.name and state["chats"][-1]["adapter_files_there"]
        (load, name, config), (unload, name2, _) = state["events"]
        assert (load, unload, name, name2) == ("load", "unload", served.name, served.name)
        assert config["base_model_name_or_path"] == "base" and config["r"] == 4
        assert state["loaded"] == {} and not folder.exists()
        record = served.record()
        assert record["name"].startswith("parametric-skills-") and record["max_rank"] == 4
        assert record["server_flag"] == "--max-lora-rank 8" and served.name.split("-")[2] == record["sha256"][:12]


@pytest.mark.parametrize("exc", [RuntimeError("the run broke"), KeyboardInterrupt()])
def test_the_adapter_is_unloaded_on_an_error_and_on_ctrl_c(tmp_path, exc):
    with fake_vllm(lambda body: "hi") as (url, state):
        with pytest.raises(type(exc)):
            with serve_adapter(EndpointChat(url, "base"), lora(), "base", folder=tmp_path) as (as_adapter, served):
                as_adapter.chat(HELLO)
                raise exc
        assert [e[0] for e in state["events"]] == ["load", "unload"] and state["loaded"] == {}
    assert list(tmp_path.iterdir()) == []


def test_two_runs_get_two_names(tmp_path):
    with fake_vllm(lambda body: "hi") as (url, state):
        chat = EndpointChat(url, "base")
        with serve_adapter(chat, lora(), "base", folder=tmp_path) as (_, one):
            with serve_adapter(chat, lora(), "base", folder=tmp_path) as (_, two):
                assert one.name != two.name and one.sha256 == two.sha256
                assert len(state["loaded"]) == 2


def test_a_server_without_runtime_lora_is_one_line_with_the_flags():
    with fake_vllm(lambda body: "hi", runtime_lora=False) as (url, state):
        with pytest.raises(EndpointError) as err:
            probe(EndpointChat(url, "base"))
    assert "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True" in str(err.value) and "--enable-lora" in str(err.value)
    assert "\n" not in str(err.value)


def test_a_rank_over_the_servers_limit_names_the_flag_and_leaves_nothing(tmp_path):
    with fake_vllm(lambda body: "hi", max_lora_rank=16) as (url, state):
        with pytest.raises(EndpointError) as err:
            with serve_adapter(EndpointChat(url, "base"), lora(rank=24), "base", folder=tmp_path):
                pytest.fail("not loaded: no block")
    assert "max_lora_rank 16" in str(err.value) and "--max-lora-rank 32" in str(err.value)
    assert state["events"] == [] and list(tmp_path.iterdir()) == []


def test_a_failed_unload_is_a_warning_not_an_error(tmp_path):
    said = []
    with fake_vllm(lambda body: "hi", fail_unload=True) as (url, state):
        with serve_adapter(EndpointChat(url, "base", retries=0), lora(), "base", folder=tmp_path,
                           warn=said.append) as (_, served):
            pass
    assert len(said) == 1 and served.name in said[0] and "could not be unloaded" in said[0]
    assert list(tmp_path.iterdir()) == []


# --- through the CLI (tiny model, untrained hypernetwork: the adapter is made, shipped and served all the same)

def test_parametric_solve_over_an_endpoint_serves_the_runs_adapter(cli, tmp_path, tiny):
    make_skill(tmp_path / "lib", "fix-bounds", body="1. Run the tests.\n2. Check every loop bound.\n")
    db = f"sqlite:///{tmp_path / 's.db'}"
    assert cli("skills", "import", str(tmp_path / "lib"), "--db", db).code == 0
    script = list(FIX)
    with fake_vllm(lambda body: script.pop(0) if script else "```submit\n```", served="tiny") as (url, state):
        r = cli("solve", str(EXAMPLE), "fix the failing test", "--mode", "parametric", "--model", tiny,
                "--endpoint", url, "--endpoint-model", "tiny", "--endpoint-adapter-dir", str(tmp_path / "served"),
                "--top-k", "1", "--db", db, "--json")
    assert r.code == 0, r.err
    report = json.loads(r.out)
    served = report["endpoint_adapter"]
    assert report["verified"] and served["name"].startswith("parametric-skills-")
    assert [e[0] for e in state["events"]] == ["load", "unload"] and state["loaded"] == {}
    assert {c["model"] for c in state["chats"]} == {served["name"]}  # every turn under the adapter
    assert state["events"][0][2]["base_model_name_or_path"] == "tiny"  # the served model is the PEFT base
    assert served["parts"][0]["name"] == "skills" and served["parts"][0]["adapters"]
    assert list((tmp_path / "served").iterdir()) == []
    with Store(db).session() as s:
        row = traj_repo.get(s, report["trajectory_id"])
        assert row.outcome["endpoint_adapter"]["name"] == served["name"] and row.mode == "parametric"
        assert row.model == "tiny"


def test_parametric_solve_refuses_a_server_without_runtime_lora_before_set_up(cli, tmp_path):
    db = tmp_path / "s.db"
    with fake_vllm(lambda body: "hi", served="base", runtime_lora=False) as (url, state):
        r = cli("solve", str(EXAMPLE), "fix", "--endpoint", url, "--endpoint-model", "base", "--db", f"sqlite:///{db}")
    assert r.code == 2 and "VLLM_ALLOW_RUNTIME_LORA_UPDATING" in r.err and len(r.err.strip().splitlines()) == 1, r.err
    assert not db.exists()


def test_endpoint_adapter_dir_is_only_for_parametric_over_an_endpoint(cli, tmp_path):
    r = cli("solve", str(EXAMPLE), "fix", "--mode", "icl", "--endpoint", "http://127.0.0.1:9/v1", "--endpoint-model",
            "m", "--endpoint-adapter-dir", str(tmp_path), "--db", f"sqlite:///{tmp_path / 's.db'}")
    assert r.code == 2 and "--endpoint-adapter-dir is for --mode parametric" in r.err, r.err
    assert os.listdir(tmp_path) == []


def test_a_404_about_the_route_itself_is_told_apart_from_vllms_unknown_adapter(tmp_path):
    """OpenAI and llama.cpp answer an unknown route with an error body too: only a 404 that names the probe's
    adapter (vLLM's "The lora adapter 'NAME' cannot be found.") means the adapter API is there."""
    from fake_openai import fake_openai

    log: list[dict] = []
    with fake_openai(lambda body: "hi", fail_first=[404], log=log) as (url, answered):  # {"error": {"message": ...}}
        with pytest.raises(EndpointError, match="does not load LoRA adapters at run time"):
            probe(EndpointChat(url, "m"))
    assert [r["path"] for r in log] == ["/v1/unload_lora_adapter"]
