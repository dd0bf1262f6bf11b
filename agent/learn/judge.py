"""LLM judge for `agent eval --judge`: a 1-10 score of how well a response follows the skill.

Any OpenAI-compatible endpoint (agent.runtime.endpoint.EndpointChat: retries with backoff on 429/5xx and
timeouts). An endpoint that cannot be reached, after the retries, raises EndpointError (the evaluation stops before writing anything); a reply without a readable
score gives None for that item, counted as missing in the report.
"""

from __future__ import annotations

import re

from agent.runtime.endpoint import DEFAULT_KEY_ENV, EndpointChat

SYSTEM = ("You are a strict grader. You judge whether a response to a software-engineering task follows "
          "the given skill's procedure and conventions, using the reference answer as an example of a good "
          "response. Reply with one line: 'Score: N' where N is an integer from 1 (ignores the skill) to 10 "
          "(follows it fully and solves the task).")
_SCORE = re.compile(r"score\s*[:=]?\s*\**\s*(\d+(?:\.\d+)?)", re.IGNORECASE)
_BARE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(?:/\s*10)?\s*\.?\s*")


def parse_score(reply: str) -> float | None:
    """'Score: 7', 'score = 7/10', or a bare '7'; None if absent or outside 1-10."""
    m = _SCORE.search(reply) or _BARE.fullmatch(reply)
    if m is None:
        return None
    value = float(m.group(1))
    return value if 1 <= value <= 10 else None


class Judge:
    def __init__(self, url: str, model: str, key_env: str = DEFAULT_KEY_ENV, timeout: float = 120.0) -> None:
        self.chat = EndpointChat(url, model, key_env=key_env, timeout=timeout, max_tokens=256)
        self.model = model

    def check(self) -> None:
        """Fail fast (EndpointError) before an evaluation spends its time generating."""
        self.chat.probe()

    def score(self, skill: str, task: str, reference: str, response: str) -> float | None:
        prompt = (f"## Skill\n{skill}\n\n## Task\n{task}\n\n## Reference answer\n{reference}\n\n"
                  f"## Response to grade\n{response}\n\nScore the response (1-10).")
        reply, _ = self.chat.chat([{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt}])
        return parse_score(reply)
