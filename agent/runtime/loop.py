"""The agent loop: one linear message list that is also the trajectory.

Each turn: ask the model, parse one action, execute it, append the observation.
Every message is handed to `record` as soon as it exists, so a crash loses nothing.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Protocol

from agent.runtime.actions import Action, FormatError, parse
from agent.runtime.tools import Observation, Tools

SYSTEM = """You are a careful software engineer fixing a bug in a Python repository.
Act in small steps. Each reply: one short thought, then exactly ONE fenced action block:

```bash
grep -n "def " calc.py
```
```read
calc.py:20
```
```edit
calc.py:24-25
new text of lines 24 to 25
```
```edit
calc.py
<<<<<<< SEARCH
exact old lines
=======
new lines
>>>>>>> REPLACE
```
```test
```
```submit
```

`read` shows numbered lines from a start line. Run the tests, read the failing code, edit it, run the
tests again, then submit."""

OBS_LIMIT = 4000


class ChatModel(Protocol):
    def chat(self, messages: list[dict[str, str]]) -> tuple[str, int]:
        """Return the reply and the number of tokens spent (prompt + completion)."""


@dataclass
class Limits:
    steps: int = 20
    seconds: float = 600.0
    tokens: int = 200_000
    format_errors: int = 3
    nudge_repeats: int = 3
    stop_repeats: int = 5
    # A wasted action (an edit that changes nothing, or the previous action sent again) is asked for again, up
    # to this many times, from the sampler `run` is given: greedy decoding repeats a refuted fix word for word.
    resamples: int = 0


@dataclass
class RunResult:
    status: str  # submitted | step_limit | time_limit | token_limit | format_errors | loop | resource_limit
    messages: list[dict[str, str]]
    steps: int
    tokens: int
    seconds: float
    actions: list[dict] = field(default_factory=list)
    message: str = ""  # why a resource_limit run ended (one line)
    resampled: int = 0  # wasted actions replaced by a sampled one


Recorder = Callable[[dict[str, str], dict | None], None]
# (messages, k) -> (reply, tokens): the k-th sampled alternative to a reply, e.g. the same chat at T > 0, seed k
Sampler = Callable[[list[dict[str, str]], int], tuple[str, int]]


def truncate(text: str, limit: int = OBS_LIMIT) -> str:
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]}\n... [{len(text) - limit} characters elided] ...\n{text[-half:]}"


def first_message(task: str) -> str:
    return f"Task: {task}\n\nThe repository is your current directory."


def run(model: ChatModel, tools: Tools, task: str, *, limits: Limits | None = None,
        system: str = SYSTEM, record: Recorder | None = None,
        on_step: Callable[[int, Action | None, Observation | str], None] | None = None,
        sample: Sampler | None = None) -> RunResult:
    limits = limits or Limits()
    record = record or (lambda message, action: None)
    messages: list[dict[str, str]] = []

    def add(role: str, content: str, action: dict | None = None) -> None:
        message = {"role": role, "content": content}
        messages.append(message)
        record(message, action)

    add("system", system)
    add("user", first_message(task))
    start, tokens, format_errors, steps = time.monotonic(), 0, 0, 0
    repeats: dict[tuple, int] = {}
    actions: list[dict] = []
    resampled, last_key = 0, None

    def done(status: str, message: str = "") -> RunResult:
        return RunResult(status, messages, steps, tokens, time.monotonic() - start, actions, message, resampled)

    def wasted(action: Action) -> bool:
        return action.key() == last_key or tools.changes_nothing(action)

    while True:
        if steps >= limits.steps:
            return done("step_limit")
        if time.monotonic() - start >= limits.seconds:
            return done("time_limit")
        if tokens >= limits.tokens:
            return done("token_limit")
        reply, spent = model.chat(messages)
        tokens += spent
        steps += 1
        try:
            action = parse(reply)
        except FormatError as exc:
            add("assistant", reply)
            format_errors += 1
            if on_step:
                on_step(steps, None, str(exc))
            if format_errors >= limits.format_errors:
                return done("format_errors")
            add("user", f"Format error: {exc}")
            continue
        for k in range(1, (limits.resamples if sample is not None else 0) + 1):
            if not wasted(action):
                break
            # not part of the trajectory: a reply that would have changed nothing, replaced before it acted
            alt, spent = sample(messages, k)
            tokens += spent
            try:
                alt_action = parse(alt)
            except FormatError:
                continue
            if not wasted(alt_action):
                reply, action, resampled = alt, alt_action, resampled + 1
        add("assistant", reply, action.to_dict())
        actions.append(action.to_dict())
        last_key = action.key()
        repeats[action.key()] = repeats.get(action.key(), 0) + 1
        if repeats[action.key()] >= limits.stop_repeats:
            return done("loop")
        observation = tools.execute(action)
        if on_step:
            on_step(steps, action, observation)
        if action.kind == "submit":
            return done("submitted")
        text = truncate(observation.text)
        if observation.limit:  # e.g. the workspace over its disk budget: running more commands only adds to it
            add("user", f"{text}\n\n{observation.limit}; the run ends here")
            return done("resource_limit", observation.limit)
        if repeats[action.key()] >= limits.nudge_repeats:
            text += ("\n\nNote: you have sent this exact action "
                     f"{repeats[action.key()]} times. Try something different.")
        add("user", text)
