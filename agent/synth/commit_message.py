"""Reference commit messages for a change task, following a skill's commit rules."""

from __future__ import annotations

import textwrap

from agent import checks as ck
from agent.synth.layout import rule_number
from agent.tasks.task import Task


def _wrap(text: str, width: int, indent: str = "") -> list[str]:
    return textwrap.wrap(text, width=width, subsequent_indent=indent, break_long_words=False,
                         break_on_hyphens=False) or [""]


def render_commit(task: Task, spec: ck.Spec) -> str | None:
    t = task.truth
    kind = ck.COMMIT_KINDS.get(t["kind"], t["kind"])
    prefix = ""
    if spec.get("ticket-prefix"):
        prefix += f"[{t['ticket']}] "
    if spec.get("gitmoji"):
        prefix += f"{ck.GITMOJI.get(kind, '✨')} "
    if spec.get("conventional-type"):
        if kind not in spec.get("conventional-type").value:
            return None
        scoped = spec.get("scope-required") or spec.get("scope-is-module")
        prefix += f"{kind}({t['scope']}): " if scoped else f"{kind}: "
    elif spec.get("subsystem-prefix"):
        prefix += f"{t['scope']}: "
    case = spec.get("subject-case").value if spec.get("subject-case") else (
        "lower" if spec.get("conventional-type") or spec.get("subsystem-prefix") else "upper")
    limit = rule_number(spec, "subject-max-len", 72)
    subject = None
    for summary in t["summaries"]:
        summary = summary[0].lower() + summary[1:] if case == "lower" else summary[0].upper() + summary[1:]
        if len(prefix + summary) <= limit:
            subject = prefix + summary
            break
    if subject is None:
        return None
    body_mode = spec.get("body").value if spec.get("body") else "required"
    if body_mode == "none":
        return subject + "\n"
    width = rule_number(spec, "body-wrap", 72)
    body: list[str] = []
    labels = spec.get("labels").value if spec.get("labels") else []
    if labels:
        texts = {"Why": t["why"], "What": t["what"], "Problem": t["why"], "Solution": t["what"],
                 "How": t["what"], "Impact": "Callers of `" + t["symbols"][0].rsplit(".", 1)[-1] + "` get the corrected behaviour."
                 if t["kind"] == "fix" else "No behaviour change for callers." if t["kind"] in ("refactor", "docs", "test")
                 else "Callers gain a new function."}
        for label in labels:
            if label not in texts:
                return None
            body += _wrap(f"{label}: {texts[label]}", width)
    elif spec.get("body-bullets"):
        for sentence in (t["why"], t["what"]):
            body += _wrap(f"- {sentence}", width, "  ")
    else:
        body += _wrap(f"{t['why']} {t['what']}", width)
    trailers = []
    for call in spec.all("trailer"):
        value = ck.trailer_value(call.value, t)
        trailers.append(f"{call.value}: {value or 'yes'}")
    closes = spec.get("closes-issue")
    if closes:
        trailers.append(f"{closes.value} #{t['issue']}")
    text = subject + "\n\n" + "\n".join(body)
    if trailers:
        text += "\n\n" + "\n".join(trailers)
    return text + "\n"
