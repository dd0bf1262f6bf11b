"""Skills on disk and in the store: parsing, validation, import/export round trips, versions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from memory import skills as skill_repo
from memory.db import Store
from memory.errors import SkillFormatError
from memory.skillfile import (
    MAX_SKILL_BYTES,
    SkillDoc,
    discover,
    escape_controls,
    parse,
    read_skill_dir,
    write_skill_dir,
)


def make_skill(root: Path, name: str, body: str = "1. Read the failing test.\n2. Fix it.\n", **front) -> Path:
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    lines = [f"name: {front.pop('fm_name', name)}", f"description: {front.pop('description', 'Does ' + name)}"]
    lines += [f"{k}: {v}" for k, v in front.items()]
    (folder / "SKILL.md").write_text("---\n" + "\n".join(lines) + "\n---\n" + body, encoding="utf-8")
    return folder


def test_parse_keeps_body_bytes_and_metadata():
    body = "# Steps\n\n1. one\t\n\n\n2. two  \n```py\nx = 1\n```\n"
    text = "---\nname: a-b\ndescription: d\nmetadata:\n  subtask: bug-fixing\n  split: train\n---\n" + body
    doc = parse(text)
    assert doc.body == body
    assert doc.metadata == {"subtask": "bug-fixing", "split": "train"}
    assert parse(doc.render()) == doc


def test_import_export_round_trip_is_byte_exact_on_body(tmp_path, db_url):
    src = tmp_path / "src"
    bodies = {
        "alpha": "Plain body.\n",
        "beta-two": "# Title\n\n* unicode: é ✓\n\n    indented code\n\ntrailing spaces   \n",
        "gamma3": "no trailing newline",
    }
    for name, body in bodies.items():
        make_skill(src, name, body=body)
    store = Store(db_url)
    with store.session() as s:
        for folder in discover(src):
            skill_repo.upsert(s, read_skill_dir(folder))
    with store.session() as s:
        skill_repo.export(s, tmp_path / "out")
    for name, body in bodies.items():
        again = read_skill_dir(tmp_path / "out" / name)
        assert again.body == body
        assert again == read_skill_dir(src / name)


def test_reimport_unchanged_is_noop_and_changed_is_new_version(tmp_path, db_url):
    store = Store(db_url)
    folder = make_skill(tmp_path, "fixer")
    with store.session() as s:
        assert skill_repo.upsert(s, read_skill_dir(folder)).action == "added"
    with store.session() as s:
        assert skill_repo.upsert(s, read_skill_dir(folder)).action == "unchanged"
    make_skill(tmp_path, "fixer", body="1. New step.\n")
    with store.session() as s:
        result = skill_repo.upsert(s, read_skill_dir(folder))
        assert (result.action, result.version) == ("new-version", 2)
    with store.session() as s:
        versions = skill_repo.versions(s, "fixer")
        assert [v.version for v in versions] == [1, 2]
        assert [v.is_current for v in versions] == [False, True]
        assert skill_repo.get(s, "fixer").body == "1. New step.\n"
        assert len(skill_repo.list_current(s)) == 1


def test_discover_finds_agent_skill_dirs_in_a_repo(tmp_path):
    for sub in (".agents/skills", ".claude/skills", ".opencode/skills", "skills"):
        make_skill(tmp_path / sub, sub.strip(".").split("/")[0].replace("_", "-") + "-skill")
    assert len(discover(tmp_path)) == 4
    assert discover(tmp_path / "skills" / "skills-skill") == [tmp_path / "skills" / "skills-skill"]


@pytest.mark.parametrize(
    "case,match",
    [
        # the reference validator's (skills-ref) messages, with the length in them
        ("no-frontmatter", r"must start with YAML frontmatter \(---\)"),
        ("unclosed", "frontmatter not properly closed"),
        ("broken-yaml", "Invalid YAML in frontmatter: .*line 2"),
        ("no-description", "Missing required field in frontmatter: description"),
        ("bad-name", "Skill name 'X_Skill' must be lowercase; .*contains invalid characters"),
        ("long-name", r"exceeds 64 character limit \(65 chars\)"),
        ("double-hyphen", "cannot contain consecutive hyphens"),
        ("mismatch", "Directory name 'x-skill' must match skill name 'other'"),
        ("long-description", r"Description exceeds 1024 character limit \(1025 chars\)"),
        ("long-compatibility", r"Compatibility exceeds 500 character limit \(501 chars\)"),
        ("unknown-field", "Unexpected fields in frontmatter: version"),
        ("dashes-in-a-value", "the '---' on line 3 is not a line of its own"),
        # the store's own checks on top
        ("non-utf8", "not UTF-8"),
        ("huge", "over the"),
        ("nul-in-body", "NUL byte"),
        ("ansi-in-name", r"control character \\x1b in the frontmatter \(line 2\)"),
        ("bell-in-description", r"control character \\x07"),
    ],
)
def test_bad_skill_files_are_refused(tmp_path, case, match):
    folder = tmp_path / "x-skill"
    folder.mkdir()
    path = folder / "SKILL.md"
    good_front = "name: x-skill\ndescription: ok\n"
    texts = {
        "no-frontmatter": "just text\n",
        "unclosed": "---\nname: x-skill\n",
        "broken-yaml": "---\nname: [unclosed\n---\nbody\n",
        "no-description": "---\nname: x-skill\n---\nbody\n",
        "bad-name": "---\nname: X_Skill\ndescription: d\n---\nbody\n",
        "long-name": "---\nname: " + "a" * 65 + "\ndescription: d\n---\nbody\n",
        "double-hyphen": "---\nname: x--skill\ndescription: d\n---\nbody\n",
        "mismatch": "---\nname: other\ndescription: d\n---\nbody\n",
        "long-description": "---\nname: x-skill\ndescription: " + "d" * 1025 + "\n---\nbody\n",
        "long-compatibility": "---\n" + good_front + "compatibility: " + "c" * 501 + "\n---\nbody\n",
        "unknown-field": "---\n" + good_front + "version: 1.0\n---\nbody\n",
        "dashes-in-a-value": "---\nname: x-skill\ndescription: before---after\n---\nbody\n",
        "nul-in-body": "---\n" + good_front + "---\nbo\0dy\n",
        "ansi-in-name": "---\nname: x-skill\x1b[2J\ndescription: d\n---\nbody\n",
        "bell-in-description": "---\nname: x-skill\ndescription: ring\x07\n---\nbody\n",
    }
    if case == "non-utf8":
        path.write_bytes(b"---\n" + good_front.encode() + b"---\nbody \xff\xfe\n")
    elif case == "huge":
        path.write_text("---\n" + good_front + "---\n" + "x" * (10 * 1024 * 1024), encoding="utf-8")
        assert path.stat().st_size > MAX_SKILL_BYTES
    else:
        path.write_text(texts[case], encoding="utf-8")
    with pytest.raises(SkillFormatError, match=match):
        read_skill_dir(folder)


def test_an_empty_body_is_valid_as_in_the_spec(tmp_path):
    folder = tmp_path / "x-skill"
    folder.mkdir()
    (folder / "SKILL.md").write_text("---\nname: x-skill\ndescription: ok\n---\n", encoding="utf-8")
    assert read_skill_dir(folder).body == ""


def test_missing_and_unreadable_paths(tmp_path):
    with pytest.raises(SkillFormatError, match="no such file"):
        discover(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SkillFormatError, match="no skills found"):
        discover(tmp_path / "empty")


def test_write_skill_dir_is_readable_back(tmp_path):
    doc = SkillDoc("w-skill", "desc", "body\n", license="MIT", metadata={"subtask": "refactoring"})
    write_skill_dir(doc, tmp_path)
    assert read_skill_dir(tmp_path / "w-skill") == doc


def test_escape_controls_shows_escapes_instead_of_sending_them():
    shown = escape_controls("body \x1b[31mred\x1b[0m\x07\x9b\x00 tab\there\nnext")
    assert "\x1b" not in shown and "\x07" not in shown and "\x9b" not in shown and "\x00" not in shown
    assert shown == "body \\x1b[31mred\\x1b[0m\\x07\\x9b\\x00 tab\there\nnext"


def test_refused_skill_leaves_the_store_unchanged(tmp_path, db_url):
    folder = tmp_path / "x-skill"
    folder.mkdir()
    (folder / "SKILL.md").write_text("---\nname: x-skill\ndescription: d\x1b]0;owned\x07\n---\nbody\n")
    store = Store(db_url)
    with pytest.raises(SkillFormatError), store.session() as s:
        skill_repo.upsert(s, read_skill_dir(folder))
    with store.session() as s:
        assert skill_repo.list_current(s, include_rejected=True) == []


def test_skills_show_and_list_never_send_control_characters_to_the_terminal(cli, tmp_path):
    db = f"sqlite:///{tmp_path / 's.db'}"
    body = "1. Read \x1b[31mthis\x1b[0m\x1b]0;owned\x07 first.\n2. Then \x9b2J the rest.\n"
    make_skill(tmp_path / "lib", "ansi-body", body=body, metadata="\n  subtask: bug-fixing")
    assert cli("skills", "import", str(tmp_path / "lib"), "--db", db).code == 0
    shown = cli("skills", "show", "ansi-body", "--db", db)
    assert shown.code == 0
    assert not any(c in shown.out for c in "\x1b\x07\x9b"), repr(shown.out)
    assert "\\x1b[31mthis" in shown.out and "\\x9b2J" in shown.out
    listed = cli("skills", "list", "--db", db)
    assert listed.code == 0 and "ansi-body" in listed.out and "\x1b" not in listed.out
    data = json.loads(cli("skills", "show", "ansi-body", "--db", db, "--json").out)
    assert "\x1b[31mthis" in data["skill_md"]  # JSON keeps the text exact (json escapes it)
