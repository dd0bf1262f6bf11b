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
    ([str(EXAMPLE), "fix", "--mode", "magic"], "unknown mode"),
    ([str(EXAMPLE), "fix", "--endpoint", "http://127.0.0.1:9/v1"], "cannot take adapters"),
])
def test_solve_bad_input(cli, tmp_path, args, match):
    r = cli("solve", *args, "--db", f"sqlite:///{tmp_path / 's.db'}")
    assert r.code == 2 and match in r.err


def test_solve_without_detectable_tests(cli, tmp_path):
    (tmp_path / "repo").mkdir()
    (tmp_path / "repo" / "main.py").write_text("print(1)\n")
    r = cli("solve", str(tmp_path / "repo"), "fix", "--db", f"sqlite:///{tmp_path / 's.db'}")
    assert r.code == 2 and "--test-cmd" in r.err


def test_refusing_endpoint_is_a_clear_error_and_leaves_no_workspace(cli, tmp_path):
    import glob
    import tempfile

    before = set(glob.glob(str(Path(tempfile.gettempdir()) / "parametric-skills-ws-*")))
    r = cli("solve", str(EXAMPLE), "fix", "--mode", "none", "--endpoint", "http://127.0.0.1:9/v1",
            "--endpoint-model", "m", "--db", f"sqlite:///{tmp_path / 's.db'}")
    assert r.code == 2 and "unreachable" in r.err
    assert set(glob.glob(str(Path(tempfile.gettempdir()) / "parametric-skills-ws-*"))) <= before
