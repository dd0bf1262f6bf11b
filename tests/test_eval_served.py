"""`agent eval --generate-endpoint`: the answers come from an OpenAI-compatible server with runtime LoRA loading,
here a fake of vLLM's adapter API on loopback (real HTTP): the base model's rows by its name, each distinct adapter
loaded once for all of its rows and unloaded before the next, the same messages and limits as a local run, and
set-up refused in one line before anything is written. tests/test_vllm_server.py runs it against a real vLLM."""

from __future__ import annotations

import json
import socket

import pytest
from fake_openai import fake_vllm

from agent.learn.evaluate import Request, ServedGeneration, adapter_groups, evaluate, load_baseline, plan
from agent.runtime.base_model import load_model
from agent.runtime.endpoint import EndpointChat, EndpointError
from agent.runtime.hypernet_loader import load as load_hypernet
from agent.synth.eval_items import make_eval_items
from memory.db import Store
from memory.models import EvalResult
from tests.test_eval_baselines import one_line_error, peft_folder
from tests.test_served_adapter import lora
from tests.tiny import tiny_model_dir

MODES = ("none", "icl", "parametric", "random", "mt")


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_model_dir(tmp_path_factory)


@pytest.fixture(scope="module")
def loaded(tiny):
    return load_model(tiny)


@pytest.fixture(scope="module")
def items():
    return make_eval_items(split="heldout", subtask="code-review", n=1, seed=0)[:2]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Recorder:
    """The fake server's answer: says which model answered which prompt, and notes what was loaded then."""

    def __init__(self) -> None:
        self.state: dict = {}
        self.seen: list[tuple[str, tuple[str, ...]]] = []

    def __call__(self, body: dict) -> str:
        self.seen.append((body["model"], tuple(self.state["loaded"])))
        return f"{body['model']}: {body['messages'][-1]['content'][:12]}"


def test_requests_are_grouped_by_adapter_object_base_model_first():
    a, b = lora(seed=1), lora(seed=2)
    requests = [Request([], a), Request([], None), Request([], b), Request([], a), Request([], None)]
    assert adapter_groups(requests) == [(None, [1, 4]), (a, [0, 3]), (b, [2])]
    assert adapter_groups([Request([], a)]) == [(a, [0])]  # no base-model group when no row needs it
    assert adapter_groups([]) == []


def test_each_adapter_is_loaded_once_answers_its_rows_and_is_unloaded(loaded, items, tmp_path):
    peft_folder(loaded, tmp_path / "mt")
    baselines = {"mt": load_baseline("mt", tmp_path / "mt", loaded)}  # one adapter for every skill
    handle = load_hypernet(loaded, None)
    jobs, requests = plan(items, loaded, handle, MODES, None, baselines)
    answer = Recorder()
    with fake_vllm(answer, served="tiny") as (url, state):
        answer.state = state
        served = ServedGeneration(EndpointChat(url, "tiny"), tmp_path / "served")
        results = evaluate(items, loaded, handle, MODES, None, max_new_tokens=8, bertscore=False, batch_size=3,
                           baselines=baselines, served=served)
    # 2 skills x (parametric, random) + one shared baseline: 5 loads, each unloaded before the next load
    events = [(what, name) for what, name, _ in state["events"]]
    names = [name for what, name in events[::2]]
    assert events == [e for name in names for e in (("load", name), ("unload", name))] and len(names) == 5
    assert state["loaded"] == {} and list((tmp_path / "served").iterdir()) == []
    # the base model's rows first, by its name; every adapter row while that adapter alone was loaded
    assert [m for m, _ in answer.seen[:4]] == ["tiny"] * 4 and all(loaded_then == () for _, loaded_then in
                                                                  answer.seen[:4])
    assert all(loaded_then == (m,) for m, loaded_then in answer.seen[4:]) and len(answer.seen) == len(jobs)
    # greedy, the local limit, the same messages as a local run (icl: the skill as the system message)
    assert {(c["temperature"], c["max_tokens"]) for c in state["chats"]} == {(0, 8)}
    assert sorted(json.dumps(c["messages"]) for c in state["chats"]) == sorted(json.dumps(r.messages)
                                                                               for r in requests)
    records = {(a["mode"], tuple(a["skills"])): a for a in served.adapters}
    skills = tuple(sorted(it.skill.name for it in items))
    assert set(records) == {(m, (it.skill.name,)) for m in ("parametric", "random") for it in items} | {("mt", skills)}
    assert [a["name"] for a in served.adapters] == names
    assert all(a["name"].split("-")[2] == a["sha256"][:12] and a["base_model"] == "tiny" for a in served.adapters)
    assert records[("mt", skills)]["answers"] == 2
    for r in results:  # each answer is the one its own row got from the server
        model = "tiny" if r.mode in ("none", "icl") else records[
            (r.mode, skills if r.mode == "mt" else (r.skill,))]["name"]
        assert r.response.startswith(f"{model}: ")
    assert served.record()["endpoint"] == url and served.record()["model"] == "tiny"


def test_an_error_under_an_adapter_unloads_it(loaded, items, tmp_path):
    def answer(body):
        if body["model"] != "tiny":
            raise RuntimeError("the server broke mid-answer")  # the connection drops: no reply
        return "ok"

    handle = load_hypernet(loaded, None)
    with fake_vllm(answer, served="tiny") as (url, state):
        served = ServedGeneration(EndpointChat(url, "tiny", retries=0), tmp_path)
        with pytest.raises(EndpointError):
            evaluate(items[:1], loaded, handle, ("none", "parametric"), None, max_new_tokens=8, bertscore=False,
                     served=served)
    assert [e[0] for e in state["events"]] == ["load", "unload"] and state["loaded"] == {}
    assert list(tmp_path.iterdir()) == []


# --- through the CLI ----------------------------------------------------------------------------------------

def run_eval(cli, tiny, tmp_path, *args):
    return cli("eval", "--model", tiny, "--db", f"sqlite:///{tmp_path / 's.db'}", "--subtask", "code-review",
               "--max-skills", "2", "--max-new-tokens", "8", "--out", str(tmp_path / "res"), *args)


def test_eval_over_an_endpoint_records_where_the_answers_came_from(cli, tiny, tmp_path):
    with fake_vllm(lambda body: "served answer", served="tiny") as (url, state):
        r = run_eval(cli, tiny, tmp_path, "--mode", "none", "--mode", "parametric", "--generate-endpoint", url,
                     "--generate-model", "tiny", "--generate-adapter-dir", str(tmp_path / "served"), "--json")
    assert r.code == 0, r.err
    report = json.loads(r.out)
    generator = report["generator"]
    assert (generator["endpoint"], generator["model"]) == (url, "tiny")
    assert [(a["mode"], a["answers"]) for a in generator["adapters"]] == [("parametric", 1), ("parametric", 1)]
    assert [e[0] for e in state["events"]] == ["load", "unload"] * 2 and state["loaded"] == {}
    assert list((tmp_path / "served").iterdir()) == []
    saved = json.loads((tmp_path / "res" / "eval_heldout.json").read_text())
    assert saved["generator"] == generator and {it["response"] for it in saved["items"]} == {"served answer"}
    with Store(f"sqlite:///{tmp_path / 's.db'}").session() as s:
        rows = s.query(EvalResult).all()
        assert rows and all(row.details["generator"] == {"endpoint": url, "model": "tiny"} for row in rows)


def test_modes_without_an_adapter_need_no_adapter_api(cli, tiny, tmp_path):
    with fake_vllm(lambda body: "ok", served="tiny", runtime_lora=False) as (url, state):
        r = run_eval(cli, tiny, tmp_path, "--mode", "none", "--mode", "icl", "--generate-endpoint", url,
                     "--generate-model", "tiny", "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out)["generator"]["adapters"] == [] and len(state["chats"]) == 4


@pytest.mark.parametrize("server, args, message", [
    (None, ("--generate-endpoint", "http://127.0.0.1:{port}/v1", "--generate-model", "tiny"), "unreachable"),
    (None, ("--generate-endpoint", "127.0.0.1:{port}/v1", "--generate-model", "tiny"), "must be an http(s) URL"),
    ("bare", ("--generate-model", "tiny"), "VLLM_ALLOW_RUNTIME_LORA_UPDATING=True"),
    ("vllm", ("--generate-model", "other"), "HTTP 404"),  # a name the server does not serve
    (None, ("--generate-endpoint", "http://127.0.0.1:{port}/v1"), "--generate-endpoint and --generate-model go"),
    (None, ("--generate-adapter-dir", "{tmp}"), "--generate-adapter-dir is for --generate-endpoint"),
    ("vllm", ("--generate-model", "tiny", "--generate-key-env", "PS_TEST_UNSET_KEY"),
     "--generate-key-env PS_TEST_UNSET_KEY: that environment variable is not set"),
])
def test_a_server_that_cannot_generate_is_one_line_before_anything_is_written(cli, tiny, tmp_path, server, args,
                                                                              message):
    port = closed_port()
    args = tuple(a.format(port=port, tmp=tmp_path) for a in args)
    if server is None:
        r = run_eval(cli, tiny, tmp_path, "--mode", "parametric", *args)
    else:
        with fake_vllm(lambda body: "ok", served="tiny", runtime_lora=server == "vllm") as (url, state):
            r = run_eval(cli, tiny, tmp_path, "--mode", "parametric", "--generate-endpoint", url, *args)
        assert state["events"] == []
    assert r.code == 2 and one_line_error(r.err, message), r.err
    assert not (tmp_path / "res").exists() and not (tmp_path / "s.db").exists()


def test_an_adapter_the_server_refuses_ends_the_run_with_nothing_loaded_or_written(cli, tiny, tmp_path):
    with fake_vllm(lambda body: "ok", served="tiny", max_lora_rank=1) as (url, state):
        r = run_eval(cli, tiny, tmp_path, "--mode", "none", "--mode", "parametric", "--generate-endpoint", url,
                     "--generate-model", "tiny", "--generate-adapter-dir", str(tmp_path / "served"))
    assert r.code == 2 and one_line_error(r.err, "--max-lora-rank"), r.err
    assert state["events"] == [] and state["loaded"] == {} and list((tmp_path / "served").iterdir()) == []
    assert not (tmp_path / "res").exists()
    with Store(f"sqlite:///{tmp_path / 's.db'}").session() as s:
        assert s.query(EvalResult).count() == 0
