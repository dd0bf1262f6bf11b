"""The teacher endpoint: rewrites kept only where the checker accepts them; unreachable -> exit 2, no files."""

from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

import pytest
from fake_openai import fake_openai

from agent import synth as sy
from agent.synth.teacher import Teacher

LIBRARY = Path(__file__).resolve().parent.parent / "memory" / "library"
GOOD, BAD = "angular-commit-format", "bulleted-conventional-commit"


def teacher_answer(body: dict) -> str:
    """Echoes the draft, except for the BAD skill's tasks."""
    system, user = body["messages"][0]["content"], body["messages"][-1]["content"]
    if "Draft:\n" not in user:
        return "OK"
    if f"# {BAD}\n" in system:
        return "Sure! Here is a commit message: fixed some stuff."
    return user.split("Draft:\n", 1)[1]


@pytest.fixture(scope="module")
def teacher():
    with fake_openai(teacher_answer) as served:
        yield served


@pytest.fixture(scope="module")
def endpoint(teacher):
    return teacher[0]


@pytest.fixture(scope="module")
def lib(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("lib")
    for name in (GOOD, BAD):
        shutil.copytree(LIBRARY / name, root / name)
    return root


def _tasks(out: Path) -> dict[str, list[dict]]:
    by: dict[str, list[dict]] = {}
    for s in sy.read_samples(out / "train-stage2.jsonl"):
        if s["type"] == "task":
            by.setdefault(s["skill"], []).append(s)
    return by


def test_teacher_rewrites_are_filtered_by_the_checker(teacher, endpoint, lib, tmp_path):
    teacher[1].clear()
    plain = sy.synth(lib, (2,), 2, 3, tmp_path / "plain", "train")
    taught = sy.synth(lib, (2,), 2, 3, tmp_path / "taught", "train", teacher=Teacher(endpoint, "fake-teacher"))
    report = taught.manifest["teacher"]
    assert report["model"] == "fake-teacher" and report["kept"] == 2 and report["rejected"] == 2
    assert all(k.startswith("check-failed:") for k in report["rejected_by_reason"])
    assert len(teacher[1]) == 1 + 4  # the probe, then one request per task reference
    assert all(r["model"] == "fake-teacher" and r["temperature"] == 0 for r in teacher[1])
    before, after = _tasks(plain.out_dir), _tasks(taught.out_dir)
    assert [s["reference"].get("answer_by") for s in after[GOOD]] == ["teacher", "teacher"]
    assert after[BAD] == before[BAD]  # rejected rewrites: the programmatic references stay
    assert [s["messages"] for s in after[GOOD]] == [s["messages"] for s in before[GOOD]]  # the echo is the draft
    assert (tmp_path / "taught" / "manifest.json").read_text().count("fake-teacher") == 1


def test_unreachable_teacher_exits_2_and_writes_nothing(cli, lib, tmp_path):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    out = tmp_path / "data" / "out"
    out.parent.mkdir()
    result = cli("data", "synth", "--out", str(out), "--stage", "1,2", "--n", "1", "--library", str(lib),
                 "--endpoint", f"http://127.0.0.1:{port}/v1", "--endpoint-model", "m")
    assert result.code == 2, result
    assert "unreachable" in result.err and len(result.err.strip().splitlines()) == 1
    assert list(out.parent.iterdir()) == []


def test_teacher_options_are_checked(cli, lib, tmp_path):
    out = tmp_path / "out"
    only_url = cli("data", "synth", "--out", str(out), "--library", str(lib), "--endpoint", "http://127.0.0.1:9/v1")
    assert only_url.code == 2 and "--endpoint-model" in only_url.err
    bad_url = cli("data", "synth", "--out", str(out), "--stage", "2", "--library", str(lib),
                  "--endpoint", "ftp://x", "--endpoint-model", "m")
    assert bad_url.code == 2 and "http" in bad_url.err
    bad_stage = cli("data", "synth", "--out", str(out), "--stage", "4", "--library", str(lib))
    assert bad_stage.code == 2 and "unknown stage" in bad_stage.err
    assert not out.exists()


def test_cli_writes_the_chosen_stages(cli, lib, tmp_path, endpoint):
    out = tmp_path / "out"
    # the old option names still work (hidden aliases of --endpoint / --endpoint-model)
    result = cli("data", "synth", "--out", str(out), "--stage", "2", "--n", "1", "--library", str(lib),
                 "--teacher", endpoint, "--teacher-model", "fake-teacher", "--json")
    assert result.code == 0, result.err
    data = json.loads(result.out)
    assert data["files"] == {"train-stage2.jsonl": data["manifest"]["counts"]["total"]}
    assert data["manifest"]["teacher"]["kept"] == 1 and data["manifest"]["teacher"]["rejected"] == 1
