"""Parse, compare and bump semantic versions (MAJOR.MINOR.PATCH[-PRERELEASE])."""

from __future__ import annotations

import re
from dataclasses import dataclass

VERSION_RE = re.compile(r"^(\d+)\.(\d+)\.(\d+)(?:-([0-9A-Za-z.]+))?$")
PARTS = ("major", "minor", "patch")


@dataclass(frozen=True)
class Version:
    major: int
    minor: int
    patch: int
    pre: str = ""

    def __str__(self) -> str:
        core = f"{self.major}.{self.minor}.{self.patch}"
        return f"{core}-{self.pre}" if self.pre else core


def parse(text: str) -> Version:
    """Parse a version string, rejecting anything that is not semver."""
    match = VERSION_RE.match(text.strip())
    if match is None:
        raise ValueError(f"not a semantic version: {text!r}")
    major, minor, patch, pre = match.groups()
    return Version(int(major), int(minor), int(patch), pre or "")


def pre_release_key(pre: str) -> tuple:
    """Return a sort key for a pre-release tag; a release sorts after its pre-releases."""
    if not pre:
        return (1,)
    parts = []
    for part in pre.split("."):
        parts.append((0, int(part), "") if part.isdigit() else (1, 0, part))
    return (0, tuple(parts))


def compare(left: str, right: str) -> int:
    """Return -1, 0 or 1 as the left version is lower than, equal to or higher than the right."""
    first, second = parse(left), parse(right)
    first_key = (first.major, first.minor, first.patch, pre_release_key(first.pre))
    second_key = (second.major, second.minor, second.patch, pre_release_key(second.pre))
    if first_key < second_key:
        return -1
    if first_key > second_key:
        return 1
    return 0


def bump(text: str, part: str) -> str:
    """Increment the major, minor or patch number and drop any pre-release tag."""
    version = parse(text)
    if part not in PARTS:
        raise ValueError(f"unknown part {part!r}")
    if part == "major":
        return str(Version(version.major + 1, 0, 0))
    if part == "minor":
        return str(Version(version.major, version.minor + 1, 0))
    return str(Version(version.major, version.minor, version.patch + 1))


def satisfies_caret(text: str, base: str) -> bool:
    """Return True if the version is in the caret range ^base: same major, not lower."""
    version, floor = parse(text), parse(base)
    if version.major != floor.major:
        return False
    return compare(text, base) >= 0


def latest(versions: list[str]) -> str:
    """Return the highest version in a non-empty list."""
    if not versions:
        raise ValueError("no versions given")
    best = versions[0]
    for candidate in versions[1:]:
        if compare(candidate, best) > 0:
            best = candidate
    return best


def is_valid(text: str) -> bool:
    """Return True if the text parses as a semantic version."""
    try:
        parse(text)
    except ValueError:
        return False
    return True
