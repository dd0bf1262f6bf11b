"""Layout of a reference answer: where each required part goes (sections, labels, JSON keys, lists)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from agent import checks as ck


@dataclass
class Content:
    """What goes into one part of an answer: a sentence, list items, code blocks."""

    text: str = ""
    items: list[str] = field(default_factory=list)
    code: list[tuple[str, str]] = field(default_factory=list)  # (language, code)


def fence(lang: str, code: str) -> str:
    return f"```{lang}\n{code.rstrip(chr(10))}\n```"


class Layout:
    """How a spec shapes an answer: JSON, `## sections`, `Label:` lines or free text."""

    def __init__(self, spec: ck.Spec):
        self.spec = spec
        self.sections = spec.get("sections").value if spec.get("sections") else []
        self.labels = spec.get("labels").value if spec.get("labels") else []
        self.bullets = {c.value for c in spec.all("bullets")} | {c.value for c in spec.all("bullets-imperative")}
        self.numbered = {c.value for c in spec.all("numbered")}

    @property
    def parts(self) -> list[str]:
        return self.sections or self.labels

    def render_part(self, name: str, content: Content) -> str:
        lines: list[str] = []
        items = content.items
        if name in self.numbered:
            items = items or ([content.text] if content.text not in ("", "None.") else [])
            lines += [f"{i}. {item}" for i, item in enumerate(items, 1)] or ["None."]
        elif name in self.bullets or items:
            if not items and content.text in ("", "None."):
                lines.append("None.")
            else:
                if content.text and items:
                    lines.append(content.text)
                lines += [f"- {item}" for item in (items or [content.text])]
        elif content.text:
            lines.append(content.text)
        if lines and content.code:
            lines.append("")
        for i, (lang, code) in enumerate(content.code):
            lines += ([""] if i else []) + [fence(lang, code)]
        body = "\n".join(lines)
        if name in self.sections:
            return f"## {name}\n\n{body}".rstrip()
        if "\n" not in body and not body.startswith("```"):
            return f"{name}: {body}".rstrip()
        return f"{name}:\n{body}"

    def assemble(self, contents: dict[str, Content], tail: Sequence[str] = (), before: str | None = None) -> str:
        """Parts in order, then the tail chunks (or the tail just before the part `before`)."""
        chunks = []
        for name in self.parts:
            if name == before:
                chunks += [t for t in tail if t]
            chunks.append(self.render_part(name, contents.get(name, Content("None."))))
        if before not in self.parts:
            chunks += [t for t in tail if t]
        return "\n\n".join(chunks).strip() + "\n"


def rule_number(spec: ck.Spec, rule_id: str, default: int) -> int:
    call = spec.get(rule_id)
    return call.value if call else default


def first_free(parts: list[str], choices: Sequence[str]) -> str | None:
    return next((p for p in parts if p in choices), None)
