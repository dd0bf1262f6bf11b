"""`agent eval --endpoint URL --endpoint-model NAME` (the LLM judge; old names --judge/--judge-model) against a
local fake OpenAI-compatible server."""

from __future__ import annotations

import json
import socket

import pytest
from fake_openai import fake_openai

from agent.learn.judge import parse_score
from memory.db import Store
from memory.models import EvalResult
from tests.test_eval_baselines import one_line_error
from tests.tiny import tiny_model_dir


@pytest.mark.parametrize("reply, score", [
    ("Score: 7", 7.0), ("score = 8/10", 8.0), ("The response follows step 2.\n**Score:** 9", 9.0), ("6", 6.0),
    ("7/10", 7.0), ("Score: 11", None), ("Score: 0", None), ("I cannot grade this.", None), ("", None),
])
def test_parse_score(reply, score):
    assert parse_score(reply) == score


class FakeJudge:
    """Answers the reachability probe, then alternates a score and an unparseable reply."""

    def __init__(self, url: str, requests: list[dict]) -> None:
        self.url, self.requests = url, requests

    def answer(self, body: dict) -> str:
        graded = [r for r in self.requests if r["messages"][0]["role"] == "system"]
        return "Score: 10" if not graded else ("Score: 8" if len(graded) % 2 else "no idea, sorry")


@pytest.fixture
def fake_judge():
    judge = FakeJudge("", [])
    with fake_openai(lambda body: judge.answer(body)) as (url, requests):
        judge.url, judge.requests = url, requests
        yield judge


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_model_dir(tmp_path_factory)


def run_eval(cli, tiny, tmp_path, *args):
    return cli("eval", "--model", tiny, "--db", f"sqlite:///{tmp_path / 's.db'}", "--subtask", "code-review",
               "--max-skills", "2", "--max-new-tokens", "8", "--mode", "none", "--mode", "icl",
               "--out", str(tmp_path / "res"), *args)


def test_judge_scores_each_answer_and_counts_unparseable_replies(cli, tiny, tmp_path, fake_judge, one_thread):
    r = run_eval(cli, tiny, tmp_path, "--judge", fake_judge.url, "--judge-model", "grader-1", "--json")
    assert r.code == 0, r.err
    table = json.loads(r.out)["table"]
    graded = [q for q in fake_judge.requests if q["messages"][0]["role"] == "system"]
    assert len(graded) == 4  # 2 items × 2 modes
    assert all(q["model"] == "grader-1" and q["path"] == "/v1/chat/completions" for q in fake_judge.requests)
    assert "## Reference answer" in graded[0]["messages"][1]["content"]
    overall = [table[m]["overall"] for m in ("none", "icl")]
    assert sum(o["judge_n"] for o in overall) == 2 and sum(o["judge_missing"] for o in overall) == 2
    assert {o["judge"] for o in overall if o["judge_n"]} == {8.0}
    items = json.loads((tmp_path / "res" / "eval_heldout.json").read_text())["items"]
    assert sorted((str(it["judge"]), it["judge_missing"]) for it in items) == [
        ("8.0", False), ("8.0", False), ("None", True), ("None", True)]
    with Store(f"sqlite:///{tmp_path / 's.db'}").session() as s:
        rows = s.query(EvalResult).filter_by(metric="judge", subtask="overall").all()
        assert rows and all(row.value == 8.0 and row.details["judge_model"] == "grader-1" for row in rows)


def test_unreachable_judge_is_a_one_line_error_and_writes_nothing(cli, tiny, tmp_path):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = run_eval(cli, tiny, tmp_path, "--endpoint", f"http://127.0.0.1:{port}/v1", "--endpoint-model", "grader-1")
    assert r.code == 2 and one_line_error(r.err, "unreachable"), r.err
    assert not (tmp_path / "res").exists() and not (tmp_path / "s.db").exists()
    r = run_eval(cli, tiny, tmp_path, "--endpoint", f"http://127.0.0.1:{port}/v1")
    assert r.code == 2 and one_line_error(r.err, "--endpoint and --endpoint-model go together"), r.err
    r = run_eval(cli, tiny, tmp_path, "--endpoint", "http://127.0.0.1:9/v1", "--judge", "http://127.0.0.1:9/v1")
    assert r.code == 2 and one_line_error(r.err, "--judge is the old name of --endpoint"), r.err
