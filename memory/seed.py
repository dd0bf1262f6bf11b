"""The seed skill library shipped in memory/library/, imported into a store on first use."""

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
