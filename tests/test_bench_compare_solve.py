"""Comparing two solve-benchmark files task by task: pairs by task, counts the discordant tasks, an exact sign
test, and refuses runs with other settings (one line, exit 2, the files untouched)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.compare_solve import compare, sign_test

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {"tasks": 40, "source": "all", "seed": 0, "attempts": 8, "max_steps": 8, "resamples": 3}


def run(task: str, first: bool, within: bool, seconds: float = 10.0) -> dict:
    return {"task": task, "config": "parametric", "first_verified": first, "verified": within, "turns": 8,
            "tokens": 100, "seconds": seconds, "format_errors": 0}


def result(runs: list[dict], **settings) -> dict:
    return {"settings": {**SETTINGS, **settings}, "runs": runs}


def test_sign_test_is_the_exact_binomial():
    assert sign_test(0, 0) == 1.0
    assert sign_test(0, 5) == pytest.approx(2 / 32)  # all five discordant pairs one way
    assert sign_test(3, 3) == 1.0
    assert sign_test(1, 6) == pytest.approx(2 * (1 + 7) / 128)


def test_pairs_by_task_and_counts_what_only_one_side_fixed():
    before = result([run("a", True, True), run("b", False, False), run("c", False, True), run("gone", True, True)])
    after = result([run("b", False, True, 20.0), run("a", True, True, 20.0), run("c", False, False, 20.0),
                    run("new", True, True)])
    out = compare(before, after, "parametric")
    assert out["tasks"] == 3  # "gone" and "new" finished on one side only
    assert out["k1"]["fixed"] == [1, 1] and out["k1"]["only_after"] == []
    assert out["within_k"] == {"fixed": [2, 2], "only_before": ["c"], "only_after": ["b"], "sign_test_p": 1.0}
    assert out["seconds"] == {"mean": [10.0, 20.0], "ratio": 2.0}


def test_other_settings_are_refused_in_one_line_and_nothing_is_written(tmp_path):
    before, after = tmp_path / "before.json", tmp_path / "after.json"
    before.write_text(json.dumps(result([run("a", True, True)])))
    after.write_text(json.dumps(result([run("a", True, True)], attempts=4)))
    text = after.read_text()
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "compare_solve.py"), str(before), str(after)],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "attempts (8 vs 4)" in proc.stderr
    assert after.read_text() == text
    after.write_text(json.dumps(result([run("a", False, True)])))
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "compare_solve.py"), str(before), str(after)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(after.read_text())["vs"]["before.json"]["k1"]["only_before"] == ["a"]
