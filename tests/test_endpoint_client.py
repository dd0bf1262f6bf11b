"""The OpenAI-compatible client (agent.runtime.endpoint, on the openai SDK) against real HTTP servers on
loopback: retries with backoff on 429/5xx, the probe before any set-up, one-line errors."""

from __future__ import annotations

import json
import shutil
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from fake_openai import fake_openai, send_json

from agent.learn.judge import Judge
from agent.runtime.endpoint import EndpointChat, EndpointError
from memory import trajectories as traj_repo
from memory.db import Store
from tests.test_agent_loop import FIX

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "buggy-stats"
HELLO = [{"role": "user", "content": "hello"}]


def closed_port() -> int:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_429_twice_then_200_succeeds_after_retries():
    log: list[dict] = []
    with fake_openai(lambda body: "hi there", fail_first=[429, 429], log=log) as (url, answered):
        text, tokens = EndpointChat(url, "m").chat(HELLO)
    assert (text, tokens) == ("hi there", 10)
    assert [r["status"] for r in log if r["method"] == "POST"] == [429, 429, 200]
    assert len(answered) == 1 and answered[0]["model"] == "m" and answered[0]["temperature"] == 0


def test_5xx_is_retried_too_and_gives_up_as_one_line():
    with fake_openai(lambda body: "ok", fail_first=[503]) as (url, answered):
        assert EndpointChat(url, "m").chat(HELLO)[0] == "ok"
    with fake_openai(lambda body: "ok", fail_first=[429] * 10) as (url, answered):
        with pytest.raises(EndpointError) as exc:
            EndpointChat(url, "m", retries=1).chat(HELLO)
    assert "HTTP 429" in str(exc.value) and "refused with 429" in str(exc.value) and "\n" not in str(exc.value)
    assert answered == []


def test_the_judge_scores_after_retries():
    with fake_openai(lambda body: "Score: 7", fail_first=[429, 429]) as (url, answered):
        judge = Judge(url, "grader")
        assert judge.score("skill", "task", "reference", "response") == 7.0
    assert len(answered) == 1


def test_a_slow_server_is_a_timeout_line_not_a_hang():
    stop = threading.Event()

    class Slow(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            stop.wait(10)  # answers only when the test is over

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        chat = EndpointChat(f"http://127.0.0.1:{server.server_address[1]}/v1", "m", timeout=0.3, retries=1)
        with pytest.raises(EndpointError, match="did not answer within 0.3 s"):
            chat.chat(HELLO)
    finally:
        stop.set()
        server.shutdown()
        server.server_close()


def test_probe_lists_models_and_asks_for_one_token_only_when_the_model_is_not_listed():
    log: list[dict] = []
    with fake_openai(lambda body: "OK", models=["m"], log=log) as (url, answered):
        EndpointChat(url, "m").probe()
        assert [(r["method"], r["path"]) for r in log] == [("GET", "/v1/models")] and answered == []
        EndpointChat(url, "other").probe()  # llama.cpp's server lists one name and serves any
        assert answered[-1]["max_tokens"] == 1 and answered[-1]["model"] == "other"


def test_probe_of_a_server_without_a_model_list_asks_for_one_token():
    with fake_openai(lambda body: "OK") as (url, answered):
        EndpointChat(url, "m").probe()
    assert len(answered) == 1 and answered[0]["max_tokens"] == 1


def test_unknown_model_and_refused_key_fail_at_the_probe_with_the_server_s_message(monkeypatch):
    class VllmLike(BaseHTTPRequestHandler):
        def _send(self, status, data):
            send_json(self, status, data)

        def do_GET(self):  # noqa: N802
            if self.headers.get("Authorization") != "Bearer right":
                self._send(401, {"error": {"message": "Unauthorized"}})
            else:
                self._send(200, {"object": "list", "data": [{"id": "served", "object": "model"}]})

        def do_POST(self):  # noqa: N802
            self.rfile.read(int(self.headers["Content-Length"]))
            self._send(404, {"error": {"message": "The model `m` does not exist.", "code": 404}})

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), VllmLike)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    try:
        monkeypatch.setenv("TEST_KEY", "wrong")
        with pytest.raises(EndpointError, match="answered HTTP 401: Unauthorized"):
            EndpointChat(url, "m", key_env="TEST_KEY").probe()
        monkeypatch.setenv("TEST_KEY", "right")
        with pytest.raises(EndpointError, match=r"answered HTTP 404: The model `m` does not exist\.$"):
            EndpointChat(url, "m", key_env="TEST_KEY").probe()
    finally:
        server.shutdown()
        server.server_close()


def test_bad_urls_and_unset_key_variables_are_refused_before_any_request(monkeypatch):
    with pytest.raises(EndpointError, match="must be an http"):
        EndpointChat("ftp://x", "m")
    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    with pytest.raises(EndpointError, match="NO_SUCH_KEY_VAR: that environment variable is not set"):
        EndpointChat("http://127.0.0.1:9/v1", "m", key_env="NO_SUCH_KEY_VAR")
    # .../chat/completions is accepted and means its base URL
    assert EndpointChat("http://h:1/v1/chat/completions/", "m").url == "http://h:1/v1"


def test_the_key_is_sent_as_a_bearer_token(monkeypatch):
    monkeypatch.setenv("MY_ENDPOINT_KEY", "sekret")
    log: list[dict] = []
    with fake_openai(lambda body: "ok", log=log) as (url, _):
        EndpointChat(url, "m", key_env="MY_ENDPOINT_KEY").chat(HELLO)
    assert log[-1]["authorization"] == "Bearer sekret"


# --- through the CLI ----------------------------------------------------------------------------------------



def test_solve_over_an_endpoint_survives_two_429s(cli, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(EXAMPLE, repo)
    script = list(FIX)

    def answer(body):
        return "OK" if body.get("max_tokens") == 1 else (script.pop(0) if script else "```submit\n```")

    db = f"sqlite:///{tmp_path / 's.db'}"
    # the probe (no model list here: a one-token chat) gets the two refusals, then the run goes on
    with fake_openai(answer, fail_first=[429, 429]) as (url, answered):
        r = cli("solve", str(repo), "fix", "--mode", "none", "--endpoint", url, "--endpoint-model", "m",
                "--db", db, "--json")
    assert r.code == 0, r.err
    report = json.loads(r.out)
    assert report["status"] == "submitted" and report["verified"] is True, report
    with Store(db).session() as s:
        (row,) = traj_repo.recent(s)
        assert row.verified


def test_unreachable_endpoint_fails_fast_at_the_probe_with_one_line(cli, tmp_path):
    url = f"http://127.0.0.1:{closed_port()}/v1"
    db = tmp_path / "s.db"
    start = time.monotonic()
    r = cli("solve", str(EXAMPLE), "fix", "--mode", "icl", "--endpoint", url, "--endpoint-model", "m",
            "--db", f"sqlite:///{db}")
    assert r.code == 2 and r.err.startswith("error: endpoint") and "unreachable" in r.err, r.err
    assert len(r.err.strip().splitlines()) == 1 and r.out == ""
    assert not db.exists()  # before the store is even created
    assert time.monotonic() - start < 60  # a bound against a hang, not a speed claim
    out = tmp_path / "data"
    r = cli("data", "synth", "--out", str(out), "--stage", "2", "--endpoint", url, "--endpoint-model", "m")
    assert r.code == 2 and "unreachable" in r.err and len(r.err.strip().splitlines()) == 1, r.err
    assert not out.exists()


def test_an_unset_key_variable_is_one_line_before_anything(cli, tmp_path, monkeypatch):
    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    r = cli("solve", str(EXAMPLE), "fix", "--mode", "none", "--endpoint", "http://127.0.0.1:9/v1",
            "--endpoint-model", "m", "--endpoint-key-env", "NO_SUCH_KEY_VAR", "--db", f"sqlite:///{tmp_path / 's.db'}")
    assert r.code == 2 and "NO_SUCH_KEY_VAR" in r.err and len(r.err.strip().splitlines()) == 1, r.err
    assert not (tmp_path / "s.db").exists()


def test_every_endpoint_command_takes_the_same_option_names(cli):
    for path in (["solve"], ["eval"], ["data", "synth"], ["evolve"], ["daemon"]):
        help_text = cli(*path, "--help").out
        for option in ("--endpoint", "--endpoint-model", "--endpoint-key-env"):
            assert option in help_text, (path, option)
        assert "--judge" not in help_text and "--teacher" not in help_text  # old names: hidden aliases


def test_the_skill_writer_s_endpoint_is_probed_before_a_cycle(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no ./agent.toml
    db = tmp_path / "s.db"
    url = f"http://127.0.0.1:{closed_port()}/v1"
    r = cli("evolve", "--endpoint", url, "--endpoint-model", "m", "--db", f"sqlite:///{db}")
    assert r.code == 2 and "unreachable" in r.err and len(r.err.strip().splitlines()) == 1, r.err
    assert not db.exists()
    # a job that writes no skills does not need the writer: no probe
    r = cli("jobs", "run", "compact", "--endpoint", url, "--endpoint-model", "m", "--db", f"sqlite:///{db}")
    assert "unreachable" not in r.err, r.err
