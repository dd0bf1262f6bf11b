"""A teacher model (any OpenAI-compatible chat endpoint) that rewrites reference answers.

The teacher sees the skill, the task and the programmatic reference as a draft, and writes
the answer in its own words. It never has the last word: synth keeps a teacher answer only
if the skill's checker accepts it, and the programmatic one otherwise. The client
(agent.runtime.endpoint) retries 429/5xx and timeouts with backoff; the worker threads share it.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from agent.runtime.endpoint import DEFAULT_KEY_ENV, EndpointChat

SYSTEM = ("You write reference answers for a software-engineering assistant. Follow this skill exactly: "
          "its format, its sections or labels, its limits.\n\n{skill}")
ASK = ("{task}\n\nA correct draft answer follows. Rewrite it in your own words while keeping every fact, file "
       "name, line number and code block, and exactly the format the skill prescribes. Reply with the answer "
       "only.\n\nDraft:\n{draft}")


@dataclass(frozen=True)
class TeacherRequest:
    skill_text: str
    task_prompt: str
    draft: str


class Teacher:
    """Asks the endpoint, a few requests at a time; answers come back in request order."""

    def __init__(self, url: str, model: str, key_env: str = DEFAULT_KEY_ENV, workers: int = 4, max_tokens: int = 512,
                 timeout: float = 120.0):
        self.chat = EndpointChat(url, model, key_env=key_env, max_tokens=max_tokens, timeout=timeout)
        self.url = self.chat.url
        self.model = model
        self.workers = workers

    def probe(self) -> None:
        """Raise EndpointError now if the endpoint cannot answer, before any work is done."""
        self.chat.probe()

    def answer(self, request: TeacherRequest) -> str:
        text, _ = self.chat.chat([
            {"role": "system", "content": SYSTEM.format(skill=request.skill_text)},
            {"role": "user", "content": ASK.format(task=request.task_prompt, draft=request.draft)},
        ])
        return text.strip() + "\n"

    def answers(self, requests: list[TeacherRequest]) -> list[str]:
        if not requests:
            return []
        with ThreadPoolExecutor(min(self.workers, len(requests))) as pool:
            return list(pool.map(self.answer, requests))
