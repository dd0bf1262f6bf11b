"""The seed skill library shipped in memory/library/: imported into an empty store on first use
(`agent solve`, `agent evolve`), or on demand with `agent skills seed`."""

from __future__ import annotations

from pathlib import Path

from memory import skills as skill_repo
from memory.db import Store
from memory.skillfile import discover, read_skill_dir

LIBRARY = Path(__file__).resolve().parent / "library"


def seed_docs():
    return [read_skill_dir(folder) for folder in discover(LIBRARY)] if LIBRARY.is_dir() else []


def ensure_seeded(store: Store) -> int:
    """Import the seed library into an empty store; returns how many skills were added."""
    with store.session() as s:
        if skill_repo.list_current(s, include_rejected=True):
            return 0
        return sum(skill_repo.upsert(s, doc, source="seed").action == "added" for doc in seed_docs())


def seed(store: Store) -> list[skill_repo.ImportResult]:
    """Import the shipped library now: skills the store lacks are added and seed skills updated to the
    shipped text; a skill of the same name from elsewhere (imported or extracted) is kept as it is."""
    results = []
    with store.session() as s:
        for doc in seed_docs():
            row = skill_repo.current(s, doc.name)
            if row is not None and row.source != "seed":
                results.append(skill_repo.ImportResult(doc.name, "kept", row.version, len(row.files)))
            else:
                results.append(skill_repo.upsert(s, doc, source="seed"))
    return results
