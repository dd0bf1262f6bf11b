"""The `agent` CLI: help everywhere, JSON where it reports data, one-line errors with exit 2."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import text

from memory.db import Store
from tests.test_skills_io import make_skill


def table_counts(url: str) -> dict[str, int]:
    store = Store(url)
    with store.engine.connect() as conn:
        return {t: conn.execute(text(f"SELECT COUNT(*) FROM {t}")).scalar() for t in ("skills", "adapters")}


def test_every_command_has_help(cli):
    from agent.cli import app
    import typer.main

    group = typer.main.get_command(app)
    paths = [[]]
    for name, cmd in group.commands.items():
        paths.append([name])
        for sub in getattr(cmd, "commands", {}):
            paths.append([name, sub])
    for path in paths:
        result = cli(*path, "--help")
        assert result.code == 0, path
        assert "Usage" in result.out and len(result.out) > 100, path


def test_import_list_show_export_json(cli, tmp_path):
    db = f"sqlite:///{tmp_path / 's.db'}"
    make_skill(tmp_path / "lib", "one-skill", metadata="\n  subtask: code-review")
    make_skill(tmp_path / "lib", "two-skill")
    r = cli("skills", "import", str(tmp_path / "lib"), "--db", db, "--json")
    assert r.code == 0, r.err
    assert sorted(x["action"] for x in json.loads(r.out)["imported"]) == ["added", "added"]
    r = cli("skills", "list", "--db", db, "--json")
    listed = json.loads(r.out)
    assert [x["name"] for x in listed] == ["one-skill", "two-skill"]
    assert listed[0]["subtask"] == "code-review"
    r = cli("skills", "show", "two-skill", "--db", db, "--json")
    assert json.loads(r.out)["skill_md"].startswith("---\nname: two-skill\n")
    r = cli("skills", "export", str(tmp_path / "out"), "--db", db)
    assert r.code == 0 and (tmp_path / "out" / "one-skill" / "SKILL.md").is_file()


def test_bad_skill_in_a_batch_is_refused_alone(cli, tmp_path):
    db = f"sqlite:///{tmp_path / 's.db'}"
    make_skill(tmp_path / "lib", "good-skill")
    make_skill(tmp_path / "lib", "bad-skill", fm_name="mismatch")
    r = cli("skills", "import", str(tmp_path / "lib"), "--db", db)
    assert r.code == 1
    assert r.err.strip().splitlines() == [f"refused: mismatch ({tmp_path / 'lib' / 'bad-skill'}): "
                                          "Directory name 'bad-skill' must match skill name 'mismatch'"]
    assert table_counts(db)["skills"] == 1


@pytest.mark.parametrize(
    "args,match",
    [
        (["skills", "import", "/no/such/path"], "no such file"),
        (["skills", "show", "nope"], "no skill named"),
        (["skills", "list", "--db", "sqlite:////no/such/dir/x.db"], "cannot open database"),
        (["model", "info", "--model", "not-a-model"], "unknown model"),
        (["skills", "export", "/no/such/parent/out"], "does not exist"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(cli, tmp_path, monkeypatch, args, match):
    monkeypatch.chdir(tmp_path)
    r = cli(*args)
    assert r.code == 2
    assert match in r.err
    assert len(r.err.strip().splitlines()) == 1


def test_newer_schema_is_refused_by_cli(cli, tmp_path):
    db = f"sqlite:///{tmp_path / 's.db'}"
    store = Store(db)
    with store.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = 'ffff'"))
    r = cli("skills", "list", "--db", db)
    assert r.code == 2 and "newer than this code" in r.err


def test_db_status_and_downgrade(cli, tmp_path):
    db = f"sqlite:///{tmp_path / 's.db'}"
    assert cli("db", "upgrade", "--db", db).code == 0
    status = json.loads(cli("db", "status", "--db", db, "--json").out)
    assert status["current"] == status["head"]
    assert cli("db", "downgrade", "base", "--db", db).code == 0
    assert json.loads(cli("db", "status", "--db", db, "--json").out)["current"] is None
