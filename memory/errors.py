"""Errors the store raises for bad input; the CLI turns them into one line and exit 2."""


class StoreError(ValueError):
    """Bad input or an unusable database."""


class SkillFormatError(StoreError):
    """A SKILL.md that does not follow the Agent Skills format."""


class SchemaTooNewError(StoreError):
    """The database was written by a newer version of this code."""
