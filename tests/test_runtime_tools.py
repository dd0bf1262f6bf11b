"""The agent-computer interface a small model uses: windows, line-range edits, refusals, compact test output."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from agent.runtime import tools as tools_mod
from agent.runtime.actions import Action, FormatError, parse
from agent.runtime.test_report import compact
from agent.runtime.tools import Tools
from test_agent_loop import EXAMPLE, FakeRunner

SOURCE = "def f(x):\n    if x > 1:\n        return 0\n    return x\n"


def test_line_range_edit_parses_and_replaces_exactly_those_lines(tmp_path):
    (tmp_path / "m.py").write_text(SOURCE)
    action = parse("The branch is wrong.\n```edit\nm.py:2-3\n    if x > 1:\n        return 1\n```")
    assert action.lines == (2, 3) and action.arg == "m.py"
    obs = Tools(tmp_path, FakeRunner(), "t").execute(action)
    assert obs.ok and (tmp_path / "m.py").read_text() == SOURCE.replace("return 0", "return 1")
    # deleting a line is an empty replacement; the other lines stay byte for byte
    Tools(tmp_path, FakeRunner(), "t").execute(parse("```edit\nm.py:4-4\n```"))
    assert (tmp_path / "m.py").read_text() == "def f(x):\n    if x > 1:\n        return 1\n"
    with pytest.raises(FormatError):
        parse("```edit\nm.py:0-1\nx\n```")
    backwards = Tools(tmp_path, FakeRunner(), "t").execute(parse("```edit\nm.py:3-2\nx\n```"))
    assert not backwards.ok and "ends before it starts" in backwards.text


def test_an_edit_that_changes_nothing_says_so(tmp_path):
    (tmp_path / "m.py").write_text(SOURCE)
    tools = Tools(tmp_path, FakeRunner(), "t")
    for action in (Action("edit", "m.py", "", "        return 0", (3, 3)), Action("edit", "m.py", "return x", "return x")):
        obs = tools.execute(action)
        assert not obs.ok and obs.text.startswith("no change: ") and (tmp_path / "m.py").read_text() == SOURCE


def test_edit_that_does_not_parse_is_refused_and_the_file_is_unchanged(tmp_path):
    (tmp_path / "m.py").write_text(SOURCE)
    tools = Tools(tmp_path, FakeRunner(), "t")
    for action in (Action("edit", "m.py", "return x", "return (x"),
                   Action("edit", "m.py", "", "    if x > 1\n", (2, 2))):
        obs = tools.execute(action)
        assert not obs.ok and "would not parse" in obs.text and "unchanged" in obs.text
        assert (tmp_path / "m.py").read_text() == SOURCE
    past_end = tools.execute(Action("edit", "m.py", "", "x", (4, 9)))
    assert not past_end.ok and "has 4 lines" in past_end.text


def test_a_line_edit_that_lost_its_indentation_is_moved_to_the_lines_it_replaces(tmp_path):
    """`    return 1` sent for a body line at 8 spaces does not parse as sent; moved as a block to line 3's
    indentation it does, and is made so (and said so). An edit that parses as sent is never moved."""
    (tmp_path / "m.py").write_text(SOURCE)
    tools = Tools(tmp_path, FakeRunner(), "t")
    obs = tools.execute(Action("edit", "m.py", "", "    return 1", (3, 3)))
    assert obs.ok and obs.text == "edited m.py (re-indented to line 3's indentation)"
    assert (tmp_path / "m.py").read_text() == SOURCE.replace("return 0", "return 1")
    # a two-line block keeps its own shape: both lines move by the same amount
    obs = tools.execute(Action("edit", "m.py", "", "if x > 2:\n    return 2", (2, 3)))
    assert obs.ok and (tmp_path / "m.py").read_text() == SOURCE.replace("x > 1:\n        return 0",
                                                                         "x > 2:\n        return 2")
    before = (tmp_path / "m.py").read_text()
    for action in (Action("edit", "m.py", "", "    return (2", (3, 3)),  # no indentation makes it parse
                   Action("edit", "m.py", "", "    if x > 2\n  return 2", (2, 3))):  # at line 2's indentation already
        obs = tools.execute(action)
        assert not obs.ok and "would not parse" in obs.text and (tmp_path / "m.py").read_text() == before
    obs = tools.execute(Action("edit", "m.py", "", "    return 3", (4, 4)))  # parses as sent: left as sent
    assert obs.ok and obs.text == "edited m.py" and (tmp_path / "m.py").read_text().endswith("\n    return 3\n")


def test_read_takes_a_window_and_numbers_lines(tmp_path, monkeypatch):
    monkeypatch.setattr(tools_mod, "READ_WINDOW", 3)
    (tmp_path / "long.py").write_text("".join(f"x{i} = {i}\n" for i in range(1, 11)))
    obs = Tools(tmp_path, FakeRunner(), "t").execute(parse("```read\nlong.py:4\n```"))
    assert obs.text.splitlines()[:4] == ["long.py (lines 4-6 of 10)", "   4 | x4 = 4", "   5 | x5 = 5", "   6 | x6 = 6"]
    assert "read long.py:7" in obs.text
    backwards = Tools(tmp_path, FakeRunner(), "t").execute(parse("```read\nlong.py:4-2\n```"))  # from 4, as `4`
    assert backwards.text.splitlines()[:2] == ["long.py (lines 4-6 of 10)", "   4 | x4 = 4"]


PYTEST_KEYERROR = """\
=================================== FAILURES ===================================
__________________________________ test_parse __________________________________

    def test_parse():
>       assert parse('1') == 1

tests/test_date.py:4:
_ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _ _

>   return groups['century']
E   KeyError: 'century'

isodate/isodates.py:2: KeyError
=========================== short test summary info ============================
FAILED tests/test_date.py::test_parse - KeyError: 'century'
1 failed in 0.10s
"""


def test_a_name_that_is_not_a_file_opens_the_one_file_it_points_at(tmp_path):
    """The embedded model shortens package paths (`html5.py` for `webcolors/_html5.py`) or names the module
    after its test file (`date.py`); refused, it sent the same action until its steps ran out."""
    for rel in ("webcolors/_html5.py", "isodate/isodates.py", "isodate/isodatetime.py", "isodate/isodate.py",
                "tests/test_date.py", "tests/test_html5.py", ".venv/lib/html5.py", "inflection/__init__.py",
                "test_inflection.py", "isodate/tzinfo.py", "isodate/tzlocal.py"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(SOURCE)
    tools = Tools(tmp_path, FakeRunner(), "t")
    obs = tools.execute(parse("```read\nhtml5.py:2\n```"))  # a hidden folder's exact name does not count
    assert obs.ok and obs.text.splitlines()[:2] == ["(html5.py is not a file: this is webcolors/_html5.py)",
                                                    "webcolors/_html5.py (lines 2-4 of 4)"]
    # `date` is in three source files: no guess until the test report names one of them
    assert not tools.execute(Action("read", "date.py")).ok and tools.locate("date.py") is None
    tools.report(tools_mod.Observation("exit code 1\n" + PYTEST_KEYERROR, False, 1))
    assert tools.reported == ["isodate/isodates.py"]
    obs = tools.execute(Action("edit", "date.py", "", "    if x > 2:", (2, 2)))
    assert obs.ok and obs.text == "edited isodate/isodates.py (date.py is not a file: this is isodate/isodates.py)"
    assert (tmp_path / "isodate/isodates.py").read_text() == SOURCE.replace("x > 1", "x > 2")
    assert (tmp_path / "isodate/isodate.py").read_text() == SOURCE
    # a test file's name resolves among the tests only; nothing resolves to a file of another suffix
    assert tools.locate("test_html5.py") == "tests/test_html5.py" and tools.locate("html5.txt") is None
    assert tools.locate("inflection.py") == "inflection/__init__.py"  # a module that is a package
    # no name matches: the one source file the report names; two candidates by name and none reported: none
    assert tools.locate("bugs.py") == "isodate/isodates.py" and tools.locate("tz.py") is None
    for outside in ("../m.py", "/etc/passwd"):
        assert not tools.execute(Action("read", outside)).ok


def test_the_report_names_the_function_an_exception_was_raised_in(tmp_path):
    """The test calls `parse`, the KeyError comes from `_century` two calls down: the report's `defined:`
    line names the function around the innermost frame, so the model has a start line to read from."""
    (tmp_path / "isodate").mkdir()
    (tmp_path / "isodate" / "isodates.py").write_text(
        "import re\n\n\n@staticmethod\ndef _century(groups):\n    x = 1\n    return groups['century']\n")
    report = compact(PYTEST_KEYERROR.replace("isodates.py:2", "isodates.py:7"), "python -m pytest", tmp_path)
    assert report.splitlines()[1:5] == ["  KeyError: 'century'", "  line: return groups['century']",
                                        "  defined: _century at isodate/isodates.py:5", "  at isodate/isodates.py:7"]
    # a frame outside any function, in a test file, or in a file that does not parse: no such line
    for source in ("x = {}\ny = 2\ngroups = {}\nz = 4\nq = 5\nr = 6\ngroups['century']\n", "def (:\n"):
        (tmp_path / "isodate" / "isodates.py").write_text(source)
        assert "defined:" not in compact(PYTEST_KEYERROR.replace("isodates.py:2", "isodates.py:7"), "t", tmp_path)
    assert "defined:" not in compact(PYTEST_KEYERROR.replace("isodate/isodates.py:2", "tests/test_date.py:4"),
                                     "t", tmp_path)
    # a frame path printed by the tests themselves is never followed out of the repo
    (tmp_path / "repo").mkdir()
    (tmp_path / "outside.py").write_text("def secret():\n    x = 1\n    return x\n")
    assert "defined:" not in compact(PYTEST_KEYERROR.replace("isodate/isodates.py:2", "pkg/../../outside.py:3"),
                                     "t", tmp_path / "repo")
    assert "defined: secret" in compact(PYTEST_KEYERROR.replace("isodate/isodates.py:2", "outside.py:3"), "t", tmp_path)


def test_read_and_edit_refuse_fifos_and_huge_files_without_hanging(tmp_path, monkeypatch):
    os.mkfifo(tmp_path / "pipe")
    tools = Tools(tmp_path, FakeRunner(), "t")
    for action in (Action("read", "pipe"), Action("edit", "pipe", "a", "b")):
        obs = tools.execute(action)  # a blocking open would hang here forever
        assert not obs.ok and "not a regular file" in obs.text
    monkeypatch.setattr(tools_mod, "FILE_LIMIT", 100)
    with open(tmp_path / "sparse.bin", "wb") as f:
        f.truncate(10_000_000)
    obs = tools.execute(Action("read", "sparse.bin"))
    assert not obs.ok and "over 100 bytes" in obs.text


def _outputs(tmp_path: Path) -> dict[str, str]:
    repo = tmp_path / "repo"
    shutil.copytree(EXAMPLE, repo)
    run = lambda *args: subprocess.run([sys.executable, "-m", *args], cwd=repo, capture_output=True, text=True)  # noqa: E731
    pyt = run("pytest", "-p", "no:cacheprovider")
    uni = run("unittest", "discover")
    return {"pytest": pyt.stdout + pyt.stderr, "unittest": uni.stdout + uni.stderr}


def test_compact_report_keeps_the_failure_and_drops_the_noise(tmp_path):
    for runner, text in _outputs(tmp_path).items():
        short = compact(text, f"python -m {runner}")
        assert "test_clamp_inside_and_outside" in short, runner
        assert "AssertionError: 0 != 10" in short and "clamp(11, 0, 10)" in short, runner
        assert "test_stats.py:17" in short and f"`python -m {runner}`" in short, runner
        assert len(short.splitlines()) <= 8 < len(text.splitlines()), runner
        assert " in 0." not in short  # durations vary between runs: never in what the model sees
    assert compact("make: *** [test] Error 2") == "make: *** [test] Error 2"


def test_frames_in_a_package_keep_the_path_the_tools_take(tmp_path):
    repo = tmp_path / "repo"
    (repo / "parse").mkdir(parents=True)
    (repo / "parse" / "__init__.py").write_text("def parse(s):\n    y = int(s)\n    return y / 0\n")
    (repo / "tests").mkdir()
    (repo / "tests" / "test_parse.py").write_text("from parse import parse\n\ndef test_parse():\n    assert parse('1') == 1\n")
    out = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider"], cwd=repo, capture_output=True,
                         text=True, env={**os.environ, "PYTHONPATH": str(repo)})
    short = compact(out.stdout + out.stderr, "python -m pytest", repo)
    assert "at parse/__init__.py:3" in short  # the path `read parse/__init__.py:3` opens, not `__init__.py`
    assert "at __init__.py" not in short


def test_frames_outside_the_repo_are_left_out_of_the_report(tmp_path):
    """`re.sub` calling the repo's callback: the interpreter's re/__init__.py frame sits between the repo's
    two, and shortened to `at __init__.py:185` it sent the model to line 185 of a repo file."""
    repo = tmp_path / "repo"
    (repo / "fmt").mkdir(parents=True)
    (repo / "fmt" / "strf.py").write_text("import re\n\n\ndef repl(m):\n    return m.group(2)\n\n\n"
                                           "def fmt(s):\n    return re.sub('(a)', repl, s)\n")
    (repo / "tests").mkdir()
    (repo / "tests" / "test_fmt.py").write_text("from fmt.strf import fmt\n\ndef test_fmt():\n    assert fmt('a') == 'a'\n")
    out = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider"], cwd=repo, capture_output=True,
                         text=True, env={**os.environ, "PYTHONPATH": str(repo)})
    assert "re/__init__.py" in out.stdout  # the frame is there to leave out
    lines = compact(out.stdout + out.stderr, "python -m pytest", repo).splitlines()
    assert [l for l in lines if l.startswith("  at ")] == ["  at fmt/strf.py:9", "  at fmt/strf.py:5"]
    assert "  defined: repl at fmt/strf.py:4" in lines


def test_a_class_body_is_not_a_return_of_the_class(tmp_path):
    """`Duration(...) != Duration(...)` names the class; its body, run when the test imports the module, is not
    where a call returned from (the report said `Duration returned None at` the class's last line)."""
    from agent.runtime.test_report import parse_returns, trace_command

    repo = tmp_path / "repo"
    (repo / "dur").mkdir(parents=True)
    (repo / "dur" / "__init__.py").write_text("class Duration:\n    def __init__(self, n):\n        self.n = n\n\n"
                                              "    def __ne__(self, other):\n        return True\n\n\n"
                                              "def make(n):\n    return Duration(n)\n")
    (repo / "tests").mkdir()
    (repo / "tests" / "test_dur.py").write_text("from dur import Duration, make\n\n\ndef test_eq():\n"
                                                 "    assert (Duration(1) != make(1)) is False\n")
    cmd = f"{sys.executable} -m pytest -p no:cacheprovider"
    env = {**os.environ, "PYTHONPATH": str(repo)}
    out = subprocess.run(cmd.split(), cwd=repo, capture_output=True, text=True, env=env)
    trace = trace_command(out.stdout, cmd, repo)
    assert trace is not None and "Duration" in trace
    traced = subprocess.run(trace, shell=True, cwd=repo, capture_output=True, text=True, env=env)
    returns = parse_returns(traced.stdout)
    assert "Duration" not in returns  # a function of the line still has its line
    assert returns["make"].startswith("  make returned <dur.Duration")
    assert returns["make"].endswith(" at dur/__init__.py:10")


def test_a_failing_line_that_calls_nothing_points_at_the_function_the_test_is_named_after(tmp_path):
    """`assert triplet == result` calls nothing: the report names `hex_to_rgb_percent` from the test's name,
    and the trace run says where it returned from. A test named after nothing in the repo gets no line."""
    from agent.runtime.test_report import parse_returns, trace_command

    repo = tmp_path / "repo"
    (repo / "conv").mkdir(parents=True)
    (repo / "conv" / "__init__.py").write_text("def hex_to_rgb_percent(h):\n    if h:\n        return '50%'\n"
                                               "    return '100%'\n")
    (repo / "tests").mkdir()
    (repo / "tests" / "test_conv.py").write_text(
        "import pytest\nfrom conv import hex_to_rgb_percent\n\n\n@pytest.mark.parametrize('h', ['#fff'])\n"
        "def test_hex_to_rgb_percent(h):\n    result = hex_to_rgb_percent(h)\n    triplet = '100%'\n"
        "    assert triplet == result\n\n\ndef test_unknown():\n    result = 1\n    assert result == 2\n")
    env = {**os.environ, "PYTHONPATH": str(repo)}
    cmd = f"{sys.executable} -m pytest -p no:cacheprovider"
    out = subprocess.run(cmd.split(), cwd=repo, capture_output=True, text=True, env=env).stdout
    traced = subprocess.run(trace_command(out, cmd, repo), shell=True, cwd=repo, capture_output=True, text=True,
                            env=env)
    lines = compact(out, cmd, repo, parse_returns(traced.stdout)).splitlines()
    at = lines.index("  line: assert triplet == result")
    assert lines[at + 1:at + 3] == ["  defined: hex_to_rgb_percent at conv/__init__.py:1",
                                    "  hex_to_rgb_percent returned '50%' at conv/__init__.py:3"]
    at = lines.index("  line: assert result == 2")
    assert not lines[at + 1].startswith("  defined:")


def test_a_huge_run_cut_to_its_head_and_tail_still_shows_a_traceback(tmp_path):
    """300 failing tests: the sandbox keeps the output's first and last 8 KiB, so the FAILED lines left are
    of tests whose tracebacks were cut. The report shows the first traceback that was kept."""
    from sandbox.limits import Limits
    from sandbox.output import OutputCap

    repo = tmp_path / "repo"
    (repo / "tests").mkdir(parents=True)
    (repo / "colors.py").write_text("def parse(v):\n    raise ValueError('must be seven characters long: ' + v)\n")
    (repo / "tests" / "test_colors.py").write_text(
        "import pytest\nfrom colors import parse\n\n\n@pytest.mark.parametrize('v', [str(i) for i in range(300)])\n"
        "def test_parse(v):\n    assert parse(v)\n")
    out = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider"], cwd=repo, capture_output=True,
                         env={**os.environ, "PYTHONPATH": str(repo), "COLUMNS": "80"}).stdout
    cap = OutputCap(Limits().output_head_bytes, Limits().output_tail_bytes)
    cap.feed(out)
    kept = cap.result()
    assert kept.truncated and "test_parse[299]" in kept.text and "__ test_parse[299] __" not in kept.text
    lines = compact(kept.text, "python -m pytest", repo).splitlines()
    assert lines[0] == "FAILED test_parse[0]" and lines[1].startswith("  ValueError: must be seven")
    assert "  defined: parse at colors.py:1" in lines[:6] and "  at colors.py:2" in lines[:6]


def test_compact_report_says_where_the_called_functions_are_defined_outside_the_tests(tmp_path):
    outputs = _outputs(tmp_path)
    repo = tmp_path / "repo"
    (repo / "pkg").mkdir()
    (repo / "pkg" / "more.py").write_text("\n\nclass clamp_helper:\n    pass\n")  # a longer name is not a match
    for runner, text in outputs.items():
        lines = compact(text, f"python -m {runner}", repo).splitlines()
        at = lines.index("  line: self.assertEqual(clamp(11, 0, 10), 10)")
        assert lines[at + 1] == "  defined: clamp at stats.py:22", runner  # the def line itself, not a blank above
        assert sum("defined:" in line for line in lines) == 1, runner  # not assertEqual, not the test file's names
    (repo / "stats.py").unlink()
    assert "defined:" not in compact(outputs["pytest"], "python -m pytest", repo)


def test_calls_through_a_module_or_an_object_are_located_and_traced(tmp_path):
    """Package tests call `inflect.plural(...)` or `obj.method(...)`: the report names where those are
    defined and where the first failing one returned from; a builtin type's method (`.get`) is not looked up
    even when the repo defines a function of that name."""
    from sandbox import Sandbox, Workspace

    repo = tmp_path / "repo"
    (repo / "inflect").mkdir(parents=True)
    (repo / "inflect" / "__init__.py").write_text(
        "def get(d, k):\n    return d[k]\n\n\ndef plural(word):\n    if word.endswith('s'):\n        return word\n"
        "    return word + 'es'\n\n\nclass Word:\n    def __init__(self, w):\n        self.w = w\n\n"
        "    def is_plural(self):\n        return not self.w.endswith('s')\n")
    (repo / "tests").mkdir()
    (repo / "tests" / "test_inflect.py").write_text(
        "import inflect\n\n\ndef test_plural():\n    assert inflect.plural('cat') == 'cats'\n\n\n"
        "def test_word():\n    assert inflect.Word('cats').is_plural() or {}.get(1)\n")
    (repo / "pytest.ini").write_text("[pytest]\naddopts = -p no:cacheprovider\n")
    with Workspace.create(repo) as ws:
        tools = Tools(ws.path, Sandbox(ws.path), f"{sys.executable} -m pytest")
        lines = tools.execute(Action("test", "")).text.splitlines()
    at = lines.index("  line: assert inflect.plural('cat') == 'cats'")
    assert lines[at + 1:at + 3] == ["  defined: plural at inflect/__init__.py:5",
                                    "  plural returned 'cates' at inflect/__init__.py:8"]
    at = lines.index("  line: assert inflect.Word('cats').is_plural() or {}.get(1)")
    assert lines[at + 1:at + 4] == ["  defined: Word at inflect/__init__.py:11",  # not the repo's `get`
                                    "  defined: is_plural at inflect/__init__.py:15", "  at tests/test_inflect.py:9"]


def test_the_report_says_which_line_the_failing_call_returned_from(tmp_path):
    """A wrong return value leaves no frame of the function in the traceback: the report re-runs the first
    failing test under the return tracer, in the sandbox, and names the line the value came from."""
    from sandbox import Sandbox, Workspace

    repo = tmp_path / "repo"
    shutil.copytree(EXAMPLE, repo)
    (repo / "pytest.ini").write_text("[pytest]\naddopts = -p no:cacheprovider\n")
    with Workspace.create(repo) as ws:
        tools = Tools(ws.path, Sandbox(ws.path), f"{sys.executable} -m pytest")
        lines = tools.execute(Action("test", "")).text.splitlines()
        at = lines.index("  defined: clamp at stats.py:22")
        assert lines[at + 1] == "  clamp returned 0 at stats.py:27"  # the `return low` of the high branch
        # a line moved by an edit moves in the report; a function that raises has no `returned` line
        tools.execute(Action("edit", "stats.py", "", "    if value > high:  # too big\n        return low", (26, 27)))
        assert "  clamp returned 0 at stats.py:27" in tools.execute(Action("test", "")).text
        tools.execute(Action("edit", "stats.py", "", "        raise ValueError(value)", (27, 27)))
        after = tools.execute(Action("test", "")).text
        assert "ValueError" in after and "returned" not in after
    # a test command that is not `python -m pytest` gets no trace run
    runner = FakeRunner()
    Tools(repo, runner, "make test").report(tools_mod.Observation("exit code 1\nFAILED x", False, 1))
    assert runner.commands == []
