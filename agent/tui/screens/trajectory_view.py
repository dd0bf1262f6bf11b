"""One trajectory, one message at a time: the model's replies with their fenced actions, and what came back.

The outcome (tests before and after, the diff) is the last page. A running trajectory grows while you
read it: a reload keeps your place and adds the new messages.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.content import Content
from textual.widgets import Footer, Markdown, Static

from agent.tui import timefmt
from agent.tui.screens.base import DataScreen
from agent.tui.trajectories_data import Step, TrajectoryDetail, load_trajectory
from agent.tui.widgets.cells import status_content

ROLE_MARK = {"system": "S", "user": "U", "assistant": "A", "tool": "T"}


def outcome_markdown(d: TrajectoryDetail) -> str:
    out = d.outcome
    parts = [f"**{d.row.status}**, {'verified' if d.row.verified else 'not verified'}: the tests "
             f"{'now pass' if d.row.verified else 'do not pass after the run'}."]
    for key, title in (("tests_before", "Tests before"), ("tests_after", "Tests after")):
        t = out.get(key)
        if isinstance(t, dict):
            state = "pass" if t.get("passed") else f"fail (exit {t.get('exit_code')})"
            parts.append(f"### {title}: {state}\n\n```text\n{(t.get('tail') or '').strip()}\n```")
    if out.get("test_cmd"):
        parts.append(f"Test command: `{out['test_cmd']}`")
    diff = (out.get("diff") or "").strip()
    parts.append(f"### Diff\n\n```diff\n{diff}\n```" if diff else "### Diff\n\nno change to the repository")
    info = d.extraction_info or {}
    what = " ".join(str(info[k]) for k in ("action", "skill") if info.get(k))
    parts.append(f"### Skill extraction: {d.extraction}" + (f"\n\n{what}" if what else "")
                 + (f"\n\n{info['reason']}" if info.get("reason") else ""))
    if d.active_skills:
        names = ", ".join(f"{s.get('name')} ({s.get('weight')})" for s in d.active_skills if isinstance(s, dict))
        parts.append(f"### Active skills\n\n{names}")
    return "\n\n".join(parts)


class TrajectoryViewer(DataScreen):
    MODE = "trajectories"
    BINDINGS = [
        Binding("n,right,l", "step(1)", "Next", key_display="n/→"),
        Binding("p,left,h", "step(-1)", "Prev", key_display="p/←"),
        # priority: the message pane would otherwise take home/end to scroll itself
        Binding("home,g", "jump(0)", "First", show=False, priority=True),
        Binding("end,G", "jump(-1)", "Last", show=False, priority=True),
        Binding("o", "outcome", "Outcome"),
        Binding("escape,backspace", "app.pop_screen", "Back"),
    ]

    def __init__(self, trajectory_id: int) -> None:
        super().__init__()
        self.trajectory_id = trajectory_id
        self.detail: TrajectoryDetail | None = None
        self.index = 0  # len(steps) is the outcome page

    def compose(self) -> ComposeResult:
        yield self.nav()
        yield Static(f"trajectory {self.trajectory_id}: loading…", id="traj-head")
        yield Static("", id="traj-strip")
        with VerticalScroll(id="step-scroll"):
            yield Static("", id="step-meta")
            yield Static("", id="step-plain")
            yield Markdown("", id="step-md")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one("#step-scroll").focus()

    def load(self) -> TrajectoryDetail | None:
        return load_trajectory(self.tui.reader, self.trajectory_id)

    def show(self, d: TrajectoryDetail | None) -> None:
        if d is None:
            self.query_one("#traj-head", Static).update(f"trajectory {self.trajectory_id} is not in the store")
            return
        was_at_end = self.detail is not None and self.index >= len(self.detail.steps)
        unchanged = self.detail is not None and (d.row, len(d.steps)) == (self.detail.row, len(self.detail.steps))
        self.detail = d
        if was_at_end:
            self.index = len(d.steps)
        if not unchanged:
            self.render_page()

    @property
    def pages(self) -> int:
        return len(self.detail.steps) + 1 if self.detail else 0

    def action_step(self, delta: int) -> None:
        self.goto(self.index + delta)

    def action_jump(self, where: int) -> None:
        self.goto(where if where >= 0 else self.pages - 1)

    def action_outcome(self) -> None:
        self.goto(self.pages - 1)

    def goto(self, index: int) -> None:
        if not self.detail:
            return
        index = max(0, min(index, self.pages - 1))
        if index != self.index:
            self.index = index
            self.render_page()

    def render_page(self) -> None:
        d = self.detail
        r = d.row
        head = Content.assemble(
            (f"#{r.id} ", "bold"), status_content(r.status, r.verified), f" · {r.mode} · {r.steps} msgs · ",
            f"{r.tokens} tok · {timefmt.duration(r.seconds)} · {timefmt.stamp(r.started)}\n",
            (r.task, "italic"),
        )
        self.query_one("#traj-head", Static).update(head)
        self.query_one("#traj-strip", Static).update(self.strip())
        scroll = self.query_one("#step-scroll")
        meta = self.query_one("#step-meta", Static)
        plain = self.query_one("#step-plain", Static)
        md = self.query_one("#step-md", Markdown)
        if self.index >= len(d.steps):
            meta.update(Content.styled(f"outcome · page {self.index + 1}/{self.pages}", "bold"))
            plain.display = False
            md.display = True
            md.update(outcome_markdown(d))
        else:
            step = d.steps[self.index]
            meta.update(self.step_meta(step))
            # replies are Markdown (their action is a fenced block); prompts and tool output are shown verbatim
            is_reply = step.role == "assistant"
            md.display, plain.display = is_reply, not is_reply
            if is_reply:
                md.update(step.content)
            else:
                plain.update(Content(step.content))
        scroll.scroll_home(animate=False)

    def step_meta(self, step: Step) -> Content:
        parts: list = [(f"{step.role} · message {self.index + 1}/{len(self.detail.steps)}", "bold")]
        if step.created:
            parts.append(f" · {timefmt.stamp(step.created)}")
        if step.action:
            arg = str(step.action.get("arg", "")).splitlines()[0] if step.action.get("arg") else ""
            parts.append(("\naction: ", "bold"))
            parts.append((f"{step.action.get('kind')} {arg}".strip(), "$accent"))
        return Content.assemble(*parts)

    def strip(self) -> Content:
        """One letter per message (S/U/A) and ◆ for the outcome; the current one is highlighted."""
        marks = [ROLE_MARK.get(s.role, "?") for s in self.detail.steps] + ["◆"]
        width = max(10, self.size.width - 2) if self.size.width else 76
        # keep the current mark in view when there are more messages than columns
        start = max(0, min(self.index - width // 2, len(marks) - width))
        parts = []
        for i, mark in enumerate(marks[start:start + width], start):
            if i == self.index:
                parts.append((mark, "bold reverse"))
            else:
                parts.append((mark, "$success" if mark == "A" else "dim"))
        return Content.assemble(*parts)
