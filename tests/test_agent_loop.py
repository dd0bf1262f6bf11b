"""The agent loop with a scripted model: parsing, tools, limits, the store, and a real sandboxed fix."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from agent.runtime import loop
from agent.runtime.actions import Action, FormatError, parse
from agent.runtime.solve import SkillContext, SolveRequest, solve
from agent.runtime.tools import Tools
from memory import trajectories as traj_repo
from tests.test_eval_baselines import one_line_error
from memory.db import Store

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "buggy-stats"


class ScriptedChat:
    """A deterministic 'model': replies from a list, counting 10 tokens a reply."""

    def __init__(self, replies: list[str]) -> None:
        self.replies = list(replies)
        self.seen: list[list[dict]] = []

    def chat(self, messages):
        self.seen.append([dict(m) for m in messages])
        return (self.replies.pop(0) if self.replies else "```submit\n```"), 10


FIX = [
    "First run the tests.\n```test\n```",
    "```read\nstats.py\n```",
    "The upper branch returns low.\n```edit\nstats.py\n<<<<<<< SEARCH\n    if value > high:\n        return low\n"
    "=======\n    if value > high:\n        return high\n>>>>>>> REPLACE\n```",
    "```test\n```",
    "Done.\n```submit\n```",
]


class FakeRunner:
    def __init__(self):
        self.commands = []

    def run(self, command, timeout):
        from sandbox.runner import CommandResult

        self.commands.append(command)
        return CommandResult(0, f"ran {command}", False, False, 0, 0.0)


def test_parse_actions():
    assert parse("think\n```bash\nls -la\n```") == Action("bash", "ls -la")
    assert parse("```sh\necho hi\n```").kind == "bash"
    assert parse("```read\nsrc/a.py\n```") == Action("read", "src/a.py")
    edit = parse("```edit\na.py\n<<<<<<< SEARCH\nx = 1\n=======\nx = 2\n>>>>>>> REPLACE\n```")
    assert (edit.kind, edit.arg, edit.search, edit.replace) == ("edit", "a.py", "x = 1", "x = 2")
    assert parse("```test\n```").kind == "test"
    assert parse("```submit\n```").kind == "submit"
    # a python block is code, not an action; the first action block counts when others are identical
    assert parse("```python\nx=1\n```\n```bash\nls\n```").arg == "ls"
    for bad in ["no block at all", "```python\nprint(1)\n```", "```bash\n\n```", "```edit\na.py\nno markers\n```",
                "```bash\nls\n```\n```bash\npwd\n```"]:
        with pytest.raises(FormatError):
            parse(bad)


def test_tools_read_edit_and_confinement(tmp_path):
    (tmp_path / "a.py").write_text("x = 1\ny = 1\n")
    outside = tmp_path.parent / f"{tmp_path.name}-secret.txt"
    outside.write_text("secret")
    (tmp_path / "link").symlink_to(outside)
    tools = Tools(tmp_path, FakeRunner(), "pytest")
    assert "1 | x = 1" in tools.execute(Action("read", "a.py")).text
    assert not tools.execute(Action("read", "link")).ok
    assert not tools.execute(Action("read", "../" + outside.name)).ok
    zero = tools.execute(Action("edit", "a.py", "z = 1", "z = 2"))
    assert not zero.ok and "not found" in zero.text
    many = tools.execute(Action("edit", "a.py", "= 1", "= 2"))
    assert not many.ok and "2 times" in many.text
    assert tools.execute(Action("edit", "a.py", "y = 1", "y = 3")).ok
    assert (tmp_path / "a.py").read_text() == "x = 1\ny = 3\n"
    assert not tools.execute(Action("edit", "link", "secret", "pwned")).ok
    assert outside.read_text() == "secret"
    outside.unlink()


def test_format_errors_stop_after_three(tmp_path):
    chat = ScriptedChat(["no action"] * 5)
    result = loop.run(chat, Tools(tmp_path, FakeRunner(), "t"), "task")
    assert result.status == "format_errors" and result.steps == 3


def test_loop_detection_nudges_then_stops(tmp_path):
    chat = ScriptedChat(["```bash\nls\n```"] * 10)
    result = loop.run(chat, Tools(tmp_path, FakeRunner(), "t"), "task")
    assert result.status == "loop" and result.steps == 5
    nudges = [m for m in result.messages if m["role"] == "user" and "Try something different" in m["content"]]
    # nudged after the 3rd and 4th repeat; the 5th stops before executing
    assert [n["content"].count("3 times") + 2 * n["content"].count("4 times") for n in nudges] == [1, 2]


def test_a_wasted_action_is_sampled_again_before_it_acts(tmp_path):
    (tmp_path / "a.py").write_text("x = 1\n")
    noop = "```edit\na.py:1-1\nx = 1\n```"  # the line as it is: changes nothing
    queue = [noop, "not an action", "```edit\na.py:1-1\nx = 2\n```", "```test\n```"]
    asked: list[int] = []

    def sample(messages, k):
        asked.append(k)
        return queue.pop(0), 7

    read = "```read\na.py\n```"
    replies = [read, noop, read, read, "```submit\n```"]
    result = loop.run(ScriptedChat(replies), Tools(tmp_path, FakeRunner(), "t"), "task",
                      limits=loop.Limits(resamples=3), sample=sample)
    assert result.status == "submitted" and (tmp_path / "a.py").read_text() == "x = 2\n"
    # the no-op edit: a sample that changes nothing either, one that does not parse, then the fix (k = 1, 2, 3);
    # the same read twice in a row: the first sample, a test run
    assert asked == [1, 2, 3, 1] and result.resampled == 2
    assert [a["kind"] for a in result.actions] == ["read", "edit", "read", "test", "submit"]
    assert result.actions[1]["replace"] == "x = 2"
    assert noop not in [m["content"] for m in result.messages]  # the replaced replies are not the trajectory
    assert result.tokens == 5 * 10 + 4 * 7
    # resamples 0 (or no sampler): every reply acts as sent, the loop as it always was
    (tmp_path / "a.py").write_text("x = 1\n")
    plain = loop.run(ScriptedChat(replies), Tools(tmp_path, FakeRunner(), "t"), "task", sample=sample)
    assert plain.resampled == 0 and len(asked) == 4 and [a["kind"] for a in plain.actions][1:4] == ["edit", "read",
                                                                                                   "read"]


def test_step_and_token_limits(tmp_path):
    tools = Tools(tmp_path, FakeRunner(), "t")
    replies = [f"```bash\necho {i}\n```" for i in range(10)]
    assert loop.run(ScriptedChat(replies), tools, "t", limits=loop.Limits(steps=4)).status == "step_limit"
    assert loop.run(ScriptedChat(replies), tools, "t", limits=loop.Limits(tokens=25)).status == "token_limit"


def test_scripted_model_fixes_example_in_real_sandbox(tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(EXAMPLE, repo)
    before_bytes = {p.name: p.read_bytes() for p in repo.iterdir() if p.is_file()}
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    chat = ScriptedChat(FIX)
    report = solve(SolveRequest(repo=repo, task="fix the failing test", mode="none"), store, chat,
                   SkillContext(active=[{"name": "x", "weight": 1.0}]))
    assert report.status == "submitted"
    assert not report.tests_before["passed"] and report.tests_after["passed"]
    assert report.verified
    assert "-        return low\n+        return high" in report.diff
    # the user's repo is untouched without --apply
    assert {p.name: p.read_bytes() for p in repo.iterdir() if p.is_file()} == before_bytes
    with store.session() as s:
        row = traj_repo.get(s, report.trajectory_id)
        assert row.verified and row.status == "submitted" and row.active_skills == [{"name": "x", "weight": 1.0}]
        roles = [st.role for st in row.steps]
        assert roles[:2] == ["system", "user"] and roles.count("assistant") == 5
        assert [st.idx for st in row.steps] == list(range(len(row.steps)))
        line = json.loads(traj_repo.to_chat_jsonl(row))
        assert line["messages"][2]["role"] == "assistant"
    # the model saw the failing test output in its first prompt
    assert "FAIL" in chat.seen[0][1]["content"] or "failed" in chat.seen[0][1]["content"]


def test_apply_writes_the_patch(tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(EXAMPLE, repo)
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    report = solve(SolveRequest(repo=repo, task="fix", mode="none", apply=True), store, ScriptedChat(FIX),
                   SkillContext())
    assert report.applied
    assert "return high" in (repo / "stats.py").read_text()


@pytest.mark.parametrize("args,match", [
    (["/no/such/repo", "fix"], "no such folder"),
    ([str(EXAMPLE), "   "], "task is empty"),
    ([str(EXAMPLE), "fix", "--mode", "magic"], "'magic' is not one of 'parametric', 'icl', 'none'"),
    ([str(EXAMPLE), "fix", "--endpoint", "http://127.0.0.1:9/v1"], "--endpoint needs --endpoint-model"),
])
def test_solve_bad_input(cli, tmp_path, args, match):
    r = cli("solve", *args, "--db", f"sqlite:///{tmp_path / 's.db'}")
    assert r.code == 2 and match in r.err and len(r.err.strip().splitlines()) == 1, r.err


def test_solve_without_detectable_tests(cli, tmp_path):
    (tmp_path / "repo").mkdir()
    (tmp_path / "repo" / "main.py").write_text("print(1)\n")
    r = cli("solve", str(tmp_path / "repo"), "fix", "--db", f"sqlite:///{tmp_path / 's.db'}")
    assert r.code == 2 and "--test-cmd" in r.err


def test_refusing_endpoint_is_a_clear_error_and_leaves_no_workspace(cli, tmp_path):
    import glob
    import os
    import tempfile

    # this process's workspaces only: other processes on the machine make their own meanwhile
    mine = str(Path(tempfile.gettempdir()) / f"parametric-skills-ws-{os.getpid()}-*")
    before = set(glob.glob(mine))
    r = cli("solve", str(EXAMPLE), "fix", "--mode", "none", "--endpoint", "http://127.0.0.1:9/v1",
            "--endpoint-model", "m", "--db", f"sqlite:///{tmp_path / 's.db'}")
    assert r.code == 2 and "unreachable" in r.err
    assert set(glob.glob(mine)) <= before


# --- issue 16: limits, caps and the end of a run, asserted on what the host and the store keep -------------

def _steps_and_row(store, tid):
    with store.session() as s:
        row = traj_repo.get(s, tid)
        return row.status, dict(row.outcome or {}), [st.content for st in row.steps]


def test_disk_budget_ends_the_run_with_resource_limit(tmp_path):
    from sandbox.limits import Limits as SandboxLimits

    repo = tmp_path / "repo"
    shutil.copytree(EXAMPLE, repo)
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    chat = ScriptedChat(["```bash\nhead -c 3000000 /dev/urandom > big.bin\n```", "```bash\ntouch more\n```"])
    request = SolveRequest(repo=repo, task="fix", mode="none", sandbox_limits=SandboxLimits(disk_bytes=1_000_000))
    report = solve(request, store, chat, SkillContext())
    assert report.status == "resource_limit" and "over its disk budget of" in report.message
    assert len(chat.seen) == 1  # the model was not asked for another command
    assert report.diff == "" and not report.verified and report.tests_after["tail"].startswith("not run")
    status, outcome, steps = _steps_and_row(store, report.trajectory_id)
    assert status == "resource_limit" and outcome["diff"] == "" and "disk budget" in outcome["limit"]
    assert "the run ends here" in steps[-1]
    assert not (repo / "big.bin").exists()


def test_memory_cap_and_disk_budget_reach_the_loop_through_observations(tmp_path):
    from sandbox.disk import DiskUsage
    from sandbox.runner import CommandResult

    class CappedRunner(FakeRunner):
        def __init__(self, used):
            super().__init__()
            self.used = used

        def run(self, command, timeout):
            self.commands.append(command)
            return CommandResult(137, "Killed\n" + "x\n" * 3000, False, False, 0, 0.0, memory_capped=True)

        def check_disk(self):
            return DiskUsage(self.used, 100)

    obs = Tools(tmp_path, CappedRunner(50), "pytest").execute(Action("test", ""))
    assert obs.text.startswith("exit code 137 (memory cap reached") and obs.limit is None
    runner = CappedRunner(500)
    result = loop.run(ScriptedChat(["```bash\nls\n```", "```bash\npwd\n```"]), Tools(tmp_path, runner, "t"), "t")
    assert result.status == "resource_limit" and "500 bytes, over its disk budget of 100" in result.message
    assert runner.commands == ["ls"]


def test_stored_diffs_and_messages_are_capped_and_say_so(tmp_path):
    from agent.runtime.solve import DIFF_CAP, MESSAGE_CAP

    repo = tmp_path / "repo"
    shutil.copytree(EXAMPLE, repo)
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    write = "python -c \"open('big.txt', 'w').write(''.join(f'line {i}\\n' for i in range(60000)))\""
    chat = ScriptedChat(["thinking " * 5000 + f"\n```bash\n{write}\n```", "```submit\n```"])
    report = solve(SolveRequest(repo=repo, task="fix", mode="none"), store, chat, SkillContext())
    assert f"diff capped at {DIFF_CAP} bytes" in report.diff and len(report.diff.encode()) < DIFF_CAP + 200
    _, outcome, steps = _steps_and_row(store, report.trajectory_id)
    assert outcome["diff"] == report.diff and "+line 0\n" in outcome["diff"] and "+line 59999" in outcome["diff"]
    assert all(len(text.encode()) < MESSAGE_CAP + 200 for text in steps)
    assert any(f"message capped at {MESSAGE_CAP} bytes" in text for text in steps)


def test_a_failing_end_of_run_closes_the_trajectory_as_error(tmp_path, monkeypatch):
    from agent.runtime.solve import RunFailed
    from sandbox.errors import DiffError
    from sandbox.workspace import Workspace

    def broken(self):
        raise DiffError("could not compute the workspace's changes: fatal: bad object HEAD")

    monkeypatch.setattr(Workspace, "diff", broken)
    repo = tmp_path / "repo"
    shutil.copytree(EXAMPLE, repo)
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    with pytest.raises(RunFailed) as err:
        solve(SolveRequest(repo=repo, task="fix", mode="none"), store, ScriptedChat(["```submit\n```"]),
              SkillContext())
    assert "\n" not in str(err.value) and "bad object HEAD" in str(err.value)
    with store.session() as s:
        (row,) = traj_repo.recent(s)
        assert row.status == "error" and "bad object HEAD" in row.outcome["error"] and row.finished_at
        assert not row.verified


def _serve_script(replies, before_first=None):
    """fake_openai answers: the probe (max_tokens 1) gets "OK", then the replies in order."""
    queue = list(replies)

    def answer(body):
        if body.get("max_tokens") == 1:
            return "OK"
        if before_first is not None and len(queue) == len(replies):
            before_first()
        return queue.pop(0) if queue else "```submit\n```"

    return answer


@pytest.mark.parametrize("case", ["conflict", "outside-link"])
def test_apply_failures_are_one_line_exit_2_and_leave_the_repo(cli, tmp_path, case):
    from tests.fake_openai import fake_openai

    repo = tmp_path / "repo"
    shutil.copytree(EXAMPLE, repo)
    user_edit = (repo / "stats.py").read_text().replace("        return low\n", "        return None  # mine\n", 1)
    if case == "conflict":  # the user edits the same lines while the agent works
        answer = _serve_script(FIX, before_first=lambda: (repo / "stats.py").write_text(user_edit))
    else:
        answer = _serve_script(["```bash\nln -s /etc/passwd leak\n```", "```submit\n```"])
    db = tmp_path / "s.db"
    with fake_openai(answer) as (url, requests):
        r = cli("solve", str(repo), "fix", "--mode", "none", "--endpoint", url, "--endpoint-model", "m",
                "--apply", "--db", f"sqlite:///{db}")
    # the end of a run: the progress lines of the run on stderr, then the one error line
    assert r.code == 2 and one_line_error(r.err, "closed as error") and r.err.strip().splitlines()[-1].startswith(
        "error:"), r.err
    assert requests[0]["max_tokens"] == 1  # probed before the run
    assert ("do not apply" if case == "conflict" else "outside") in r.err and "closed as error" in r.err
    assert not (repo / "leak").exists() and not (repo / "leak").is_symlink()
    if case == "conflict":
        assert (repo / "stats.py").read_text() == user_edit
    store = Store(f"sqlite:///{db}")
    with store.session() as s:
        (row,) = traj_repo.recent(s)
        assert row.status == "error" and "\n" not in row.outcome["error"]


def _counts(url):
    from sqlalchemy import text

    with Store(url).engine.connect() as conn:
        return [conn.execute(text(f"SELECT count(*) FROM {t}")).scalar() for t in ("trajectories", "skills")]


@pytest.mark.parametrize("endpoint", ["refused", "http-500"])
def test_a_refused_endpoint_leaves_the_store_unchanged(cli, tmp_path, endpoint):
    import http.server
    import threading

    url = f"sqlite:///{tmp_path / 's.db'}"
    Store(url)
    before = _counts(url)
    server = None
    if endpoint == "refused":
        base = "http://127.0.0.1:9/v1"
    else:
        class Fails(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                self.send_error(500, "down")

            def log_message(self, *args):
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Fails)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        base = f"http://127.0.0.1:{server.server_address[1]}/v1"
    try:
        r = cli("solve", str(EXAMPLE), "fix", "--mode", "none", "--endpoint", base, "--endpoint-model", "m",
                "--db", url)
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
    assert r.code == 2 and len(r.err.strip().splitlines()) == 1
    assert ("unreachable" if endpoint == "refused" else "HTTP 500") in r.err
    assert _counts(url) == before == [0, 0]  # no `error` trajectory, not even the seed skills


@pytest.mark.parametrize("args,match", [
    (["--max-steps", "0"], "--max-steps must be at least 1"),
    (["--max-seconds", "0"], "--max-seconds must be at least 1"),
    (["--resamples", "-1"], "--resamples must be 0 or more"),
    (["--no-sandbox"], "add --i-understand-commands-run-unconfined"),
])
def test_bad_limits_and_unconfirmed_no_sandbox_are_one_line(cli, tmp_path, args, match):
    r = cli("solve", str(EXAMPLE), "fix", *args, "--db", f"sqlite:///{tmp_path / 's.db'}")
    assert r.code == 2 and len(r.err.strip().splitlines()) == 1 and match in r.err, r.err
    assert not (tmp_path / "s.db").exists()


def test_confirmed_no_sandbox_gets_past_the_check(cli, tmp_path):
    r = cli("solve", str(EXAMPLE), "fix", "--mode", "none", "--no-sandbox", "--i-understand-commands-run-unconfined",
            "--endpoint", "http://127.0.0.1:9/v1", "--endpoint-model", "m", "--db", f"sqlite:///{tmp_path / 's.db'}")
    assert r.code == 2 and "unreachable" in r.err  # refused at the endpoint probe, i.e. after the flag check


def test_attempts_store_every_trajectory_and_stop_at_the_first_verified(tmp_path):
    """Generate and validate (solve_attempts) with the end-of-run handling above: each attempt is closed."""
    import contextlib

    from agent.runtime.solve import solve_attempts

    repo = tmp_path / "repo"
    shutil.copytree(EXAMPLE, repo)
    store = Store(f"sqlite:///{tmp_path / 's.db'}")
    chats = {1: ScriptedChat(["```submit\n```"]), 2: ScriptedChat(FIX), 3: ScriptedChat([])}
    report = solve_attempts(SolveRequest(repo=repo, task="fix", mode="none"), store,
                            lambda k: contextlib.nullcontext(chats[k]), SkillContext(), attempts=3)
    assert report.verified and report.attempt == 2 and len(report.attempts) == 2 and not chats[3].seen
    with store.session() as s:
        first, second = (traj_repo.get(s, i) for i in report.attempts)
        assert (first.status, first.verified, second.verified) == ("submitted", False, True)
        assert second.outcome["first_attempt_trajectory"] == first.id


def test_attempts_below_one_is_one_line_and_touches_nothing(cli, tmp_path):
    db = tmp_path / "s.db"
    r = cli("solve", str(EXAMPLE), "fix", "--mode", "none", "--attempts", "0", "--db", f"sqlite:///{db}")
    assert r.code == 2 and "--attempts must be at least 1" in r.err and r.err.strip().count("\n") == 0
    assert not db.exists()
