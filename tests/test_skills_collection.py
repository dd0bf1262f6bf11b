"""A collection of skills from the wild: validated as the spec's reference validator does, imported skill
by skill with every refusal reported, bundled files kept (content-addressed, capped, symlinks never
followed) and exported byte for byte; `skills lint` is the spec, `skills lint --library` the training checks."""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path

import pytest
import skills_ref
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from memory import skillfile
from memory import skills as skill_repo
from memory.db import Store
from memory.models import Skill, SkillBlob, SkillFile
from memory.seed import seed_docs
from memory.skillfile import read_skill

LONG_DESCRIPTION = ("Extract text and tables from PDF files, fill PDF forms, merge and split documents. " * 13)[:1067] + "."
SECRET = b"private key material that must never reach the store\n"

# YAML a re-serialiser would rewrite: quoted scalars, a folded block, comments, CRLF line ends
FORMS_MD = (
    "---\n"
    "name: form-filler\n"
    "description: 'Fill PDF forms: read the fields, then write them. Use when a user''s form needs data.'\n"
    "license: Complete terms in LICENSE.txt\n"
    "compatibility: >\n"
    "  Requires Python 3.11+ and\n"
    "  the pypdf package\n"
    "allowed-tools: Bash(python:*) Read Write\n"
    "metadata:\n"
    "  author: \"example-org\"   # quoted on purpose\n"
    "  version: 1.10\n"
    "---\n"
    "# Form filler\n\nRun `scripts/fill.py` and read [the reference](reference.md).\n"
)
NESTED_MD = (
    "---\n"
    "name: nested-meta\n"
    "description: Use when the metadata of a skill is richer than strings.\n"
    "metadata:\n"
    "  author: someone\n"
    "  owner:\n"
    "    team: docs\n"
    "    contact: docs@example.org\n"
    "  tags:\n"
    "    - pdf\n"
    "    - forms\n"
    "---\n"
    "Body.\n"
)
FORM_FILES = {
    "scripts/fill.py": b"#!/usr/bin/env python3\nprint('fill')\n",
    "scripts/lib/util.sh": b"echo util\n",
    "reference.md": b"# Reference\n\nField names \xc3\xa9 and more.\n",
    "LICENSE.txt": b"Apache License\nVersion 2.0\n",
    "assets/logo.png": bytes(range(256)) * 4,  # not UTF-8: bytes, not text
}


def build_collection(root: Path, outside: Path) -> Path:
    """Five skills as a public collection lays them out: one invalid, one with bundled files, one with
    nested metadata, one holding symlinks, one plain with CRLF line ends."""
    skills = root / "skills"
    (skills / "pdf-tools").mkdir(parents=True)
    (skills / "pdf-tools" / "SKILL.md").write_text(
        f"---\nname: pdf-tools\ndescription: {LONG_DESCRIPTION}\n---\nUse pypdf.\n", encoding="utf-8")
    (skills / "pdf-tools" / "forms.md").write_text("forms\n", encoding="utf-8")

    forms = skills / "form-filler"
    forms.mkdir()
    (forms / "SKILL.md").write_bytes(FORMS_MD.encode())
    for rel, data in FORM_FILES.items():
        (forms / rel).parent.mkdir(parents=True, exist_ok=True)
        (forms / rel).write_bytes(data)
    (forms / "scripts/fill.py").chmod(0o755)

    (skills / "nested-meta").mkdir()
    (skills / "nested-meta" / "SKILL.md").write_text(NESTED_MD, encoding="utf-8")

    linked = skills / "linked"
    linked.mkdir()
    (linked / "SKILL.md").write_text("---\nname: linked\ndescription: Use when files point elsewhere.\n---\n"
                                     "See notes.md.\n", encoding="utf-8")
    (linked / "notes.md").write_text("notes\n", encoding="utf-8")
    outside.mkdir()
    (outside / "id_rsa").write_bytes(SECRET)
    (linked / "key").symlink_to(outside / "id_rsa")
    (linked / "dir-link").symlink_to(outside, target_is_directory=True)

    (skills / "plain").mkdir()
    (skills / "plain" / "SKILL.md").write_bytes(
        b"---\r\nname: plain\r\ndescription: Use when nothing special is needed.\r\n---\r\n1. Do it.\r\n")
    return root


@pytest.fixture
def collection(tmp_path) -> Path:
    return build_collection(tmp_path / "repo", tmp_path / "outside")


def regular_files(folder: Path) -> dict[str, tuple[bytes, bool]]:
    """Every regular file under a folder (symlinks not followed): relative path -> (bytes, executable)."""
    out = {}
    for path in sorted(folder.rglob("*")):
        if path.is_symlink() or not path.is_file():
            continue
        out[path.relative_to(folder).as_posix()] = (path.read_bytes(), bool(path.stat().st_mode & stat.S_IXUSR))
    return out


def test_import_refuses_the_invalid_skill_and_imports_the_rest(cli, collection, db_url):
    result = cli("skills", "import", str(collection), "--db", db_url)
    assert result.code == 1
    refusals = [line for line in result.err.splitlines() if line.startswith("refused:")]
    assert refusals == [f"refused: pdf-tools ({collection / 'skills' / 'pdf-tools'}): "
                        "Description exceeds 1024 character limit (1068 chars)"]
    assert "5 skills: 4 added, 0 new versions, 0 unchanged, 1 refused (6 bundled files)" in result.out
    listed = json.loads(cli("skills", "list", "--db", db_url, "--json").out)
    assert sorted(r["name"] for r in listed) == ["form-filler", "linked", "nested-meta", "plain"]
    store = Store(db_url)
    with store.session() as s:
        assert s.scalar(select(func.count()).select_from(Skill).where(Skill.name == "pdf-tools")) == 0
        assert s.scalar(select(func.count()).select_from(SkillFile)) == 5 + 1  # form-filler's + notes.md


def test_import_json_reports_every_skill_refusal_and_warning(cli, collection, sqlite_url):
    result = cli("skills", "import", str(collection), "--db", sqlite_url, "--json")
    assert result.code == 1
    data = json.loads(result.out)
    assert {r["name"]: (r["action"], r["files"]) for r in data["imported"]} == {
        "form-filler": ("added", 5), "linked": ("added", 1), "nested-meta": ("added", 0), "plain": ("added", 0)}
    assert data["refused"] == [{"name": "pdf-tools", "path": str(collection / "skills" / "pdf-tools"),
                                "reason": "Description exceeds 1024 character limit (1068 chars)"}]
    warned = {(w["name"], w["reason"]) for w in data["warnings"]}
    assert ("linked", "key: symlink, not followed (not stored)") in warned
    assert ("linked", "dir-link: symlink, not followed (not stored)") in warned
    nested = sorted(reason for name, reason in warned if name == "nested-meta")
    assert [r.split(",")[0] for r in nested] == ["metadata.owner is a mapping", "metadata.tags is a list"]
    assert all(w["path"] == str(collection / "skills" / w["name"]) for w in data["warnings"])


def test_export_restores_every_file_byte_for_byte(cli, collection, tmp_path, db_url):
    cli("skills", "import", str(collection), "--db", db_url)
    out = tmp_path / "out"
    result = cli("skills", "export", str(out), "--db", db_url)
    assert result.code == 0 and "wrote 4 skills" in result.out
    for name in ("form-filler", "nested-meta", "plain", "linked"):
        source = regular_files(collection / "skills" / name)
        exported = regular_files(out / name)
        assert exported == source, name  # bytes and executable bits of SKILL.md and every bundled file
    assert (out / "form-filler" / "SKILL.md").read_bytes() == FORMS_MD.encode()
    assert not (out / "linked" / "key").exists() and not (out / "linked" / "dir-link").exists()
    # and the export imports back as the same skills: nothing new
    again = json.loads(cli("skills", "import", str(out), "--db", db_url, "--json").out)
    assert {r["action"] for r in again["imported"]} == {"unchanged"} and again["refused"] == []


def test_symlinks_are_never_followed(collection, sqlite_url):
    linked = read_skill(collection / "skills" / "linked")
    assert linked.ok and [f.path for f in linked.files] == ["notes.md"]
    assert sorted(linked.warnings) == ["dir-link: symlink, not followed (not stored)",
                                       "key: symlink, not followed (not stored)"]
    store = Store(sqlite_url)
    skill_repo.import_folders(store, [linked])
    with store.session() as s:
        assert all(SECRET not in blob.data for blob in s.scalars(select(SkillBlob)))
    # a symlinked SKILL.md is refused, not read through
    evil = collection / "skills" / "evil"
    evil.mkdir()
    (evil / "SKILL.md").symlink_to(collection / "skills" / "plain" / "SKILL.md")
    assert read_skill(evil).errors == ("SKILL.md is a symlink (symlinks are not followed)",)


def test_spec_fields_are_kept_as_the_spec_defines_them(cli, collection, sqlite_url):
    cli("skills", "import", str(collection), "--db", sqlite_url)
    forms = json.loads(cli("skills", "show", "form-filler", "--db", sqlite_url, "--json").out)
    assert forms["allowed_tools"] == "Bash(python:*) Read Write"
    assert forms["compatibility"] == "Requires Python 3.11+ and the pypdf package\n"
    assert forms["license"] == "Complete terms in LICENSE.txt"
    assert forms["metadata"] == {"author": "example-org", "version": "1.10"}  # strings as written, not 1.1
    assert forms["skill_md"] == FORMS_MD
    assert [(f["path"], f["executable"]) for f in forms["files"]] == [
        ("LICENSE.txt", False), ("assets/logo.png", False), ("reference.md", False),
        ("scripts/fill.py", True), ("scripts/lib/util.sh", False)]
    nested = json.loads(cli("skills", "show", "nested-meta", "--db", sqlite_url, "--json").out)
    # a nested value is JSON text, never a Python repr ("{'team': 'docs'}")
    assert nested["metadata"] == {"author": "someone", "owner": '{"team": "docs", "contact": "docs@example.org"}',
                                  "tags": '["pdf", "forms"]'}
    assert json.loads(nested["metadata"]["owner"]) == {"team": "docs", "contact": "docs@example.org"}


def test_validation_is_the_reference_validators(tmp_path):
    """On what the spec decides, our errors are exactly `skills_ref.validate`'s."""
    cases = {
        "ok-skill": "name: ok-skill\ndescription: fine\nlicense: MIT\nallowed-tools: Read\nmetadata:\n  a: b\n",
        "long-desc": "name: long-desc\ndescription: " + "d" * 1068 + "\n",
        "Bad_Name": "name: Bad_Name\ndescription: d\n",
        "mismatch": "name: other-name\ndescription: d\n",
        "unknown": "name: unknown\ndescription: d\nversion: 2\nauthor: me\n",
        "compat": "name: compat\ndescription: d\ncompatibility: " + "c" * 600 + "\n",
        "no-desc": "name: no-desc\n",
        "-edge-": "name: -edge-\ndescription: d\n",
        "flow": "name: flow\ndescription: d\nallowed-tools: [Read, Write]\n",
        "dupe": "name: dupe\ndescription: d\ndescription: e\n",
        "café": "name: café\ndescription: i18n names are letters too\n",
    }
    for folder_name, front in cases.items():
        folder = tmp_path / folder_name
        folder.mkdir()
        (folder / "SKILL.md").write_text(f"---\n{front}---\nbody\n", encoding="utf-8")
        ours = read_skill(folder, files=False).errors
        reference = skills_ref.validate(folder)
        if reference and reference[0].startswith("Invalid YAML"):
            assert len(ours) == 1 and ours[0].startswith("Invalid YAML in frontmatter: "), folder_name
        else:
            assert list(ours) == reference, folder_name
    assert read_skill(tmp_path / "ok-skill").ok and read_skill(tmp_path / "café").ok


def test_file_caps_refuse_the_skill_and_say_the_cap(tmp_path, monkeypatch):
    monkeypatch.setattr(skillfile, "MAX_FILE_BYTES", skillfile.MIB)
    monkeypatch.setattr(skillfile, "MAX_BUNDLE_BYTES", 2 * skillfile.MIB)
    folder = tmp_path / "big"
    folder.mkdir()
    (folder / "SKILL.md").write_text("---\nname: big\ndescription: d\n---\nbody\n", encoding="utf-8")
    (folder / "data.bin").write_bytes(b"x" * (skillfile.MIB + 1))
    result = read_skill(folder)
    assert not result.ok
    assert result.errors == ("data.bin: 1,048,577 bytes is over the 1 MiB cap per bundled file",)
    (folder / "data.bin").unlink()
    for k in range(3):
        (folder / f"part{k}.bin").write_bytes(b"y" * skillfile.MIB)
    assert read_skill(folder).errors == ("bundled files over the 2 MiB cap per skill (reached at part2.bin)",)
    fifo = tmp_path / "fifo-skill"
    fifo.mkdir()
    (fifo / "SKILL.md").write_text("---\nname: fifo-skill\ndescription: d\n---\nbody\n", encoding="utf-8")
    os.mkfifo(fifo / "pipe")  # never opened: reading it would block
    assert read_skill(fifo).warnings == ("pipe: not a regular file (not stored)",)


def test_a_skill_whose_write_fails_is_rolled_back_alone(collection, db_url, monkeypatch):
    """One transaction per skill: a failure after the files were added leaves no trace of that skill."""
    real = skill_repo.upsert

    def flaky(session, doc, **kw):
        result = real(session, doc, **kw)
        if doc.name == "form-filler":
            raise IntegrityError("INSERT", {}, Exception("simulated constraint failure"))
        return result

    monkeypatch.setattr(skill_repo, "upsert", flaky)
    folders = [read_skill(f) for f in sorted((collection / "skills").iterdir())]
    store = Store(db_url)
    report = skill_repo.import_folders(store, folders)
    assert sorted(r.name for r in report.imported) == ["linked", "nested-meta", "plain"]
    assert [(n.name, n.reason) for n in report.refused] == [
        ("form-filler", "the database refused it: simulated constraint failure"),
        ("pdf-tools", "Description exceeds 1024 character limit (1068 chars)")]
    with store.session() as s:
        assert s.scalar(select(func.count()).select_from(Skill).where(Skill.name == "form-filler")) == 0
        assert s.scalar(select(func.count()).select_from(SkillBlob)) == 1  # notes.md of `linked` only


def test_versions_share_blobs_and_a_changed_file_is_a_new_version(cli, collection, sqlite_url):
    cli("skills", "import", str(collection), "--db", sqlite_url)
    store = Store(sqlite_url)
    with store.session() as s:
        blobs = s.scalar(select(func.count()).select_from(SkillBlob))
    again = json.loads(cli("skills", "import", str(collection), "--db", sqlite_url, "--json").out)
    assert {r["action"] for r in again["imported"]} == {"unchanged"}
    (collection / "skills" / "form-filler" / "reference.md").write_bytes(b"# Reference, revised\n")
    changed = json.loads(cli("skills", "import", str(collection), "--db", sqlite_url, "--json").out)
    assert {r["name"]: (r["action"], r["version"]) for r in changed["imported"]}["form-filler"] == ("new-version", 2)
    with store.session() as s:
        assert s.scalar(select(func.count()).select_from(SkillBlob)) == blobs + 1  # only the new bytes
        assert s.scalar(select(func.count()).select_from(SkillFile)) == 6 + 5


def test_lint_is_the_spec_and_lint_library_the_training_checks(cli, collection, tmp_path, sqlite_url):
    spec_valid = tmp_path / "lib" / "just-spec"
    spec_valid.mkdir(parents=True)
    (spec_valid / "SKILL.md").write_text("---\nname: just-spec\ndescription: Use when X.\n---\nDo X.\n",
                                         encoding="utf-8")
    ok = cli("skills", "lint", str(spec_valid))
    assert ok.code == 0 and "1 skills, 0 invalid, 0 with warnings" in ok.out
    library = cli("skills", "lint", "--library", str(spec_valid))
    assert library.code == 1 and "just-spec: metadata.subtask is missing" in library.out
    whole = cli("skills", "lint", str(collection), "--json")
    assert whole.code == 1
    data = json.loads(whole.out)
    assert data["invalid"] == {"pdf-tools": ["Description exceeds 1024 character limit (1068 chars)"]}
    assert set(data["warnings"]) == {"linked", "nested-meta"}
    # the store: every shipped seed skill is spec-valid and passes the training checks
    assert cli("skills", "seed", "--db", sqlite_url).code == 0
    stored = cli("skills", "lint", "--db", sqlite_url)
    assert stored.code == 0 and re.search(r"\b(\d+) skills, 0 invalid", stored.out)
    assert cli("skills", "lint", "--library", "--db", sqlite_url).code == 0


def test_the_empty_list_hint_names_commands_that_exist(cli, sqlite_url, tmp_path):
    hint = cli("skills", "list", "--db", sqlite_url)
    assert hint.code == 0
    commands = re.findall(r"`agent ([a-z ]+?)(?: [A-Z]+)?`", hint.out)
    assert commands == ["skills import", "skills seed"], hint.out
    for command in commands:
        assert cli(*command.split(), "--help").code == 0
    shipped = len(seed_docs())
    seeded = json.loads(cli("skills", "seed", "--db", sqlite_url, "--json").out)
    assert shipped > 100 and len(seeded) == shipped and {r["action"] for r in seeded} == {"added"}
    # a user's skill of a seed skill's name is kept; the rest is unchanged
    mine = tmp_path / "mine" / "add-docstrings"
    mine.mkdir(parents=True)
    (mine / "SKILL.md").write_text("---\nname: add-docstrings\ndescription: My own.\n---\nMine.\n", encoding="utf-8")
    assert cli("skills", "import", str(mine), "--db", sqlite_url).code == 0
    again = cli("skills", "seed", "--db", sqlite_url)
    assert f"{shipped} seed skills: 0 added, 0 new versions, {shipped - 1} unchanged, 1 kept" in again.out
    assert json.loads(cli("skills", "show", "add-docstrings", "--db", sqlite_url, "--json").out)["source"] == "user"


@pytest.mark.parametrize("args,message", [
    (("skills", "import", "/no/such/folder"), "/no/such/folder: no such file or folder"),
    (("skills", "export", "OUT", "no-such-skill"), "no skill named 'no-such-skill'"),
    (("skills", "export", "FILE"), "cannot export to"),
    (("skills", "lint", "/no/such/folder"), "/no/such/folder: no such file or folder"),
])
def test_bad_input_is_one_line_exit_2_store_unchanged(cli, tmp_path, sqlite_url, args, message):
    (tmp_path / "a-file").write_text("not a folder")
    args = tuple({"OUT": str(tmp_path / "out"), "FILE": str(tmp_path / "a-file")}.get(a, a) for a in args)
    result = cli(*args, "--db", sqlite_url)
    assert result.code == 2
    assert len(result.err.strip().splitlines()) == 1 and message in result.err
    assert json.loads(cli("skills", "list", "--db", sqlite_url, "--json").out) == []


@pytest.mark.parametrize("command", ["import", "list", "show", "export", "lint", "seed"])
def test_every_skills_command_has_help(cli, command):
    result = cli("skills", command, "--help")
    assert result.code == 0 and "Usage" in result.out and "--json" in result.out
