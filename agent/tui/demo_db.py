"""A demo database with two weeks of believable history, for the TUI's tests, screenshots and `agent tui --demo`.

Everything is derived from a seed and an anchor time, so the same call writes the same rows (the snapshot
tests depend on that). Adapters are real safetensors blobs of small random LoRA factors, and the EMA
versions are real EMA steps over them, so norms and ranks behave as they would in a live store.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from memory.db import Store
from memory.errors import StoreError
from memory.models import (
    Adapter,
    EvalResult,
    EvolutionRun,
    HypernetCheckpoint,
    Skill,
    Trajectory,
    TrajectoryStep,
)
from memory.skillfile import SkillDoc

# the snapshot tests and the README screenshot use this instant as "now"
DEMO_ANCHOR = datetime(2026, 11, 20, 12, 0, tzinfo=timezone.utc)
BASE_MODEL = "smollm2-135m-instruct"
DAYS = 14
LAYERS = 6
MODULES = (("q_proj", 64, 64), ("v_proj", 64, 32))
EMA_BETA = 0.85
EMA_MAX_RANK = 16

# name, subtask, description, steps: the skills the demo library is made of
SEED_SKILLS = [
    ("read-traceback-bottom-up", "bug-localization",
     "Locate a failing line by reading the traceback from the innermost frame outwards.",
     ["Run the failing test alone with `-x -q`.", "Start at the last frame that is in the repository.",
      "Read ten lines around it before opening anything else.", "Name the suspect function in one sentence."]),
    ("bisect-by-test", "bug-localization",
     "Narrow a regression down by halving the code path a failing test exercises.",
     ["Write down the input that fails.", "Add one assertion half-way through the call path.",
      "Keep the half that still fails; repeat until one function is left."]),
    ("fix-off-by-one-boundaries", "bug-fixing",
     "Check loop and slice boundaries first when a result is one item short or long.",
     ["List every `range`, slice and comparison in the suspect function.",
      "Test the empty input, one item, and the exact boundary.", "Change one boundary at a time and rerun."]),
    ("minimal-failing-test-first", "bug-fixing",
     "Reproduce the bug as the smallest failing test before touching the code.",
     ["Copy the reported input into a new test.", "Shrink it until removing anything makes it pass.",
      "Fix the code; keep the test."]),
    ("pytest-parametrize-edge-cases", "test-writing",
     "Cover boundaries with one parametrized test instead of many copies.",
     ["Collect the edge values: empty, one, many, negative, maximum.",
      "Use `@pytest.mark.parametrize` with ids that say what each case is.", "One assertion per case."]),
    ("test-names-say-behaviour", "test-writing",
     "Name each test after the behaviour it pins, not after the function it calls.",
     ["Write the name as `test_<situation>_<expected result>`.", "Keep one behaviour per test."]),
    ("review-error-handling", "code-review",
     "Review every new `except` for what it swallows and what the caller sees.",
     ["Flag bare `except:` and `except Exception` without a re-raise.",
      "Check that the error message names the bad value.", "Suggest the narrowest exception type."]),
    ("review-checklist-security", "code-review",
     "A short security pass: input reaching a shell, a path, SQL or pickle.",
     ["Search the diff for `subprocess`, `open(`, `execute(` and `pickle`.",
      "Trace each argument back to user input.", "Ask for quoting, path checks or parameters."]),
    ("conventional-commit-subject", "commit-message",
     "Write the subject as `type(scope): summary` in the imperative, at most 50 characters.",
     ["Pick the type: feat, fix, refactor, test, docs, chore.", "Scope is the touched module.",
      "Imperative mood, no final period, ≤ 50 characters."]),
    ("commit-body-why-not-what", "commit-message",
     "Explain in the body why the change was needed; the diff already shows what.",
     ["Leave a blank line after the subject.", "Wrap at 72 columns.", "End with the issue reference."]),
    ("extract-function-refactor", "refactoring",
     "Pull a block with one purpose into a named function, keeping behaviour identical.",
     ["Run the tests and keep them green throughout.", "Name the block's purpose; that is the function name.",
      "Pass what it reads, return what it writes."]),
    ("rename-with-grep-audit", "refactoring",
     "Rename a symbol everywhere, then grep to prove no stale reference is left.",
     ["`grep -rn OLD_NAME` before and after.", "Update docs and tests in the same change."]),
]

EXTRACTED_SKILLS = [
    ("roman-numeral-subtractive-pairs", "bug-fixing",
     "Handle IV, IX, XL, XC, CD and CM before single letters when parsing Roman numerals.",
     ["Scan two characters at a time.", "Prefer the subtractive pair when it is valid.",
      "Test 4, 9, 40, 90, 400, 900 and 1994."]),
    ("semver-prerelease-ordering", "bug-fixing",
     "Compare semver pre-release identifiers field by field; numeric fields sort numerically.",
     ["Split on '.', compare numbers as ints and strings lexically.",
      "A version without pre-release sorts after one with it."]),
    ("lru-evict-on-insert", "bug-fixing",
     "Evict the least recently used key when inserting past capacity, not when reading.",
     ["Move a key to the end on every get.", "Pop the first key only when len > capacity after a put."]),
    ("interval-merge-sort-first", "bug-fixing",
     "Sort intervals by start before merging; touching intervals merge.",
     ["Sort by (start, end).", "Merge when next.start <= current.end."]),
    ("csv-quoted-fields", "bug-localization",
     "When CSV columns shift, look for a splitter that ignores quotes.",
     ["Search for `.split(',')`.", "Replace it with the csv module or a quote-aware loop."]),
    ("ledger-decimal-not-float", "bug-fixing",
     "Money sums drift with float; use Decimal and quantize at the boundary.",
     ["Parse amounts with Decimal(str).", "Quantize to cents when printing, not while adding."]),
    ("dates-leap-year-rule", "bug-fixing",
     "A leap year is divisible by 4, except centuries, except every 400 years.",
     ["Test 1900, 2000, 2024 and 2100."]),
    ("paginate-last-page-ceil", "bug-localization",
     "Page counts come from ceiling division; a truncated division loses the last page.",
     ["Look for `//` near 'page'.", "Use `-(-n // size)` and test n = 0, size, size + 1."]),
    ("pqueue-stable-ties", "test-writing",
     "Test that equal priorities come out in insertion order.",
     ["Push three items with one priority.", "Assert the pop order equals the push order."]),
    ("rle-roundtrip-property", "test-writing",
     "Pin an encoder with a round-trip test: decode(encode(x)) == x.",
     ["Include the empty string and runs longer than 9."]),
    ("matrix-shape-guard-review", "code-review",
     "In review, ask for a shape check before any matrix product.",
     ["Point at the product.", "Suggest a ValueError naming both shapes."]),
    ("stats-median-even-length", "bug-fixing",
     "The median of an even-length list is the mean of the two middle values.",
     ["Sort a copy.", "Test lengths 1, 2, 3 and 4."]),
    ("wrap-long-words", "bug-fixing",
     "A word longer than the width goes on its own line, split only if asked.",
     ["Test a word of width + 1."]),
    ("textcase-acronym-split", "refactoring",
     "Split camelCase before an uppercase run's last letter: HTTPServer -> http_server.",
     ["Use two regex passes.", "Test 'HTTPServer', 'getHTTP', 'simple'."]),
    ("calc-precedence-table", "refactoring",
     "Replace nested if-chains of operators by one precedence table.",
     ["Map operator -> (precedence, associativity).", "Keep the parser's tests green."]),
    ("commit-scope-from-path", "commit-message",
     "Take the commit scope from the top folder of the changed files.",
     ["One folder: use it.", "Several: use the common parent or omit the scope."]),
]

USER_SKILLS = [
    ("house-style-docstrings", "code-review",
     "Docstrings say why in one line; the signature says what.",
     ["Flag docstrings that restate parameter names.", "Ask for the reason the function exists."]),
    ("no-print-in-library-code", "code-review",
     "Library code logs or returns; it never prints.",
     ["Search the diff for `print(`.", "Suggest logging or a return value."]),
    ("small-diffs-per-commit", "commit-message",
     "One logical change per commit; split formatting from behaviour.",
     ["If the subject needs 'and', split the commit."]),
    ("run-tests-before-submit", "bug-fixing",
     "Always run the full test command before submitting.",
     ["Run the repository's test command.", "Submit only when it passes."]),
]

REPOS = ("roman", "semver", "lru", "intervals", "csvish", "ledger", "dates", "paginate", "pqueue", "rle",
         "matrix", "stats", "wrap", "textcase", "calc")
REJECT_REASONS = ("duplicate of an existing skill (similarity 0.93)", "steps are not checkable: no concrete rule")


@dataclass
class DemoSummary:
    skills: int
    adapters: int
    ema_versions: int
    trajectories: int
    evolution_runs: int
    jobs: int


def demo_job() -> None:
    """What the demo's scheduled jobs point at; they are for display and never meant to run."""


def _body(description: str, steps: list[str], subtask: str) -> str:
    lines = ["## When to use", "", f"{description} Applies to {subtask.replace('-', ' ')} tasks.", "",
             "## Steps", ""]
    lines += [f"{i}. {s}" for i, s in enumerate(steps, 1)]
    lines += ["", "## Check", "", "- The repository's tests pass after the change.", ""]
    return "\n".join(lines)


def _doc(name: str, subtask: str, description: str, steps: list[str], version: int = 1) -> SkillDoc:
    if version > 1:
        steps = steps + [f"Revision {version}: state the failing input in the final message."]
    return SkillDoc(name=name, description=description, body=_body(description, steps, subtask),
                    license="Apache-2.0", metadata={"subtask": subtask})


class _Builder:
    """Writes the history in time order, keeping the counters (uses, wins, EMA version) consistent."""

    def __init__(self, store: Store, anchor: datetime, seed: int) -> None:
        import torch

        from hypernet.targets import Target

        self.store = store
        self.anchor = anchor
        self.start = anchor - timedelta(days=DAYS)
        self.rng = random.Random(seed)
        self.gen = torch.Generator().manual_seed(seed)
        self.targets = tuple(Target(layer, module, f"model.layers.{layer}.self_attn.{module}", fin, fout)
                             for layer in range(LAYERS) for module, fin, fout in MODULES)
        self.skills: dict[str, Skill] = {}  # current row per name
        self.ema = None
        self.shared = None
        self.ema_version = 0
        self.hypernet_id: int | None = None
        self.counts = DemoSummary(0, 0, 0, 0, 0, 0)

    def at(self, day: float) -> datetime:
        return self.start + timedelta(days=day)

    # --- adapters -------------------------------------------------------------------------------
    def _random_lora(self, scale: float):
        import torch

        from hypernet.lora import LoraWeights

        if self.shared is None:
            # what skills have in common (they are built from shared rules): a direction every adapter leans
            # towards, so the EMA settles on it instead of averaging independent noise away
            self.shared = {t.key: (torch.randn(8, t.in_features, generator=self.gen),
                                   torch.randn(t.out_features, 8, generator=self.gen)) for t in self.targets}
        factors = {}
        for t in self.targets:
            # deeper layers get larger updates, as hypernetwork outputs tend to
            layer_gain = 0.6 + 0.15 * t.layer
            sa, sb = self.shared[t.key]
            a = (0.8 * sa + 0.6 * torch.randn(8, t.in_features, generator=self.gen)) * scale * layer_gain
            b = (0.8 * sb + 0.6 * torch.randn(t.out_features, 8, generator=self.gen)) * scale * layer_gain
            factors[t.key] = (a, b)
        return LoraWeights(BASE_MODEL, self.targets, factors)

    def _store_adapter(self, s, lora, kind: str, when: datetime, **fields) -> Adapter:
        import hashlib

        blob = lora.to_safetensors_bytes()
        row = Adapter(kind=kind, blob=blob, sha256=hashlib.sha256(blob).hexdigest(), base_model=BASE_MODEL,
                      rank=lora.max_rank, targets=[t.to_dict() for t in lora.targets],
                      shapes={t.key: [t.in_features, t.out_features] for t in lora.targets},
                      created_at=when, **fields)
        s.add(row)
        s.flush()
        self.counts.adapters += 1
        return row

    # --- history --------------------------------------------------------------------------------
    def hypernet(self, s, day: float, name: str, stage: str, status: str = "accepted",
                 metrics: dict | None = None) -> None:
        row = HypernetCheckpoint(name=name, base_model=BASE_MODEL, stage=stage, parent_id=self.hypernet_id,
                                 config={"rank": 8, "latents": 8}, metrics=metrics or {},
                                 path=f"checkpoints/{name}.safetensors", sha256=f"{self.rng.getrandbits(256):064x}",
                                 status=status, created_at=self.at(day))
        s.add(row)
        s.flush()
        if status == "accepted":
            self.hypernet_id = row.id

    def skill(self, s, spec: tuple, source: str, day: float, version: int = 1, provenance: dict | None = None,
              status: str = "active", reason: str | None = None) -> Skill:
        name, subtask, description, steps = spec
        doc = _doc(name, subtask, description, steps, version)
        old = self.skills.get(name)
        if old is not None:
            old.is_current = False
        when = self.at(day)
        row = Skill(name=name, version=version, is_current=True, description=doc.description, body=doc.body,
                    license=doc.license, meta=dict(doc.metadata), subtask=subtask, source=source, status=status,
                    status_reason=reason, provenance=provenance or {}, content_hash=doc.content_hash,
                    use_count=old.use_count if old else 0, win_count=old.win_count if old else 0,
                    created_at=when, updated_at=when)
        s.add(row)
        s.flush()
        self.skills[name] = row
        if status != "active":
            return row
        self.counts.skills += old is None
        lora = self._random_lora(scale=self.rng.uniform(0.05, 0.12))
        self._store_adapter(s, lora, "skill", when + timedelta(seconds=40), skill_id=row.id,
                            hypernet_id=self.hypernet_id, cache_key=f"{doc.content_hash}:hn{self.hypernet_id}",
                            meta={"skill": name, "trained_hypernet": True})
        if source != "seed":
            self.fold_into_ema(s, lora, row, when + timedelta(minutes=2))
        return row

    def fold_into_ema(self, s, lora, skill: Skill, when: datetime) -> None:
        """One accumulation step, with the version meta agent/evolve/accumulate.py writes."""
        from hypernet.ema import ema_update
        from hypernet.norms import delta_norms

        self.ema, info = ema_update(self.ema, lora, EMA_BETA, max_rank=EMA_MAX_RANK)
        self.ema_version += 1
        norms = delta_norms(self.ema)
        meta = {"op": "update", "parent_version": self.ema_version - 1 or None, "beta": EMA_BETA,
                "updates": info.updates, "skill": skill.name, "max_rel_error": round(info.max_rel_error, 4),
                "norms": {k: round(v, 6) for k, v in norms.items()},
                "total_norm": round(sum(v * v for v in norms.values()) ** 0.5, 6), "rank": self.ema.max_rank}
        self._store_adapter(s, self.ema, "ema", when, version=self.ema_version, hypernet_id=self.hypernet_id,
                            meta=meta)
        skill.ema_version = self.ema_version
        self.counts.ema_versions += 1

    def prune_ema(self, s, keep_last: int, when: datetime) -> list[int]:
        """What compaction does to old EMA versions: the row and its meta stay, the weights go."""
        import hashlib

        rows = s.query(Adapter).filter(Adapter.kind == "ema").order_by(Adapter.version).all()
        pruned = []
        for r in rows[:-keep_last]:
            r.meta = {**r.meta, "pruned": {"sha256": r.sha256, "bytes": len(r.blob), "at": when.isoformat()}}
            r.blob, r.sha256 = b"", hashlib.sha256(b"").hexdigest()
            pruned.append(r.version)
        return pruned

    def trajectory(self, s, day: float, skill_pool: list[str]) -> int:
        rng = self.rng
        repo = rng.choice(REPOS)
        progress = day / DAYS  # the agent gets better as skills and the EMA accumulate
        mode = rng.choices(("parametric", "icl", "none"), weights=(6, 2, 1))[0]
        p_win = 0.3 + 0.45 * progress + (0.05 if mode == "parametric" else -0.05 if mode == "none" else 0)
        verified = rng.random() < p_win
        status = "submitted" if verified else rng.choice(("submitted", "step_limit", "format_errors", "loop"))
        active = []
        if mode != "none" and skill_pool:
            for name in rng.sample(skill_pool, k=min(len(skill_pool), rng.randint(1, 3))):
                active.append({"name": name, "similarity": round(rng.uniform(0.35, 0.8), 3),
                               "weight": round(rng.uniform(0.2, 0.6), 3)})
            if mode == "parametric" and self.ema_version:
                active.append({"name": f"ema-v{self.ema_version}", "weight": 1.0})
        for entry in active:
            row = self.skills.get(entry["name"])
            if row is not None:
                row.use_count += 1
                row.win_count += verified
        started = self.at(day)
        messages = _script(rng, repo, verified, status)
        seconds = sum(rng.uniform(4, 25) for _ in messages)
        tokens = sum(len(m[1]) // 3 for m in messages) + 900
        tests_after = {"passed": verified, "exit_code": 0 if verified else 1,
                       "tail": "5 passed in 0.04s" if verified else "1 failed, 4 passed in 0.05s"}
        diff = "" if status in ("format_errors", "loop") else (
            f"--- a/{repo}.py\n+++ b/{repo}.py\n@@ -12,7 +12,7 @@\n-    return total // size\n"
            "+    return -(-total // size)\n")
        traj = Trajectory(task=_task(repo), repo=f"agent/tasks/corpus/{repo}", mode=mode, model=BASE_MODEL,
                          status=status, verified=verified, active_skills=active, tokens=tokens,
                          outcome={"tests_before": {"passed": False, "exit_code": 1,
                                                    "tail": "1 failed, 4 passed in 0.05s"},
                                   "tests_after": tests_after, "diff": diff, "test_cmd": "python -m pytest -q",
                                   "sandboxed": True},
                          started_at=started, finished_at=started + timedelta(seconds=seconds))
        if day >= DAYS - 0.5:
            traj.extraction = "pending"
        elif verified:  # extraction agreed with a skill it already had; ADD and EDIT are set by the caller
            traj.extraction = "extracted"
            traj.extraction_info = {"action": "AGREE", "skill": active[0]["name"] if active else None}
        else:
            traj.extraction = "skipped"
            traj.extraction_info = {"reason": f"run ended {status} without passing tests"}
        s.add(traj)
        s.flush()
        t = started
        for idx, (role, content, action) in enumerate(messages):
            t += timedelta(seconds=rng.uniform(2, 20))
            s.add(TrajectoryStep(trajectory_id=traj.id, idx=idx, role=role, content=content, action=action,
                                 created_at=t))
        self.counts.trajectories += 1
        return traj.id if verified else 0

    def extracted(self, s, trajectory_id: int, action: str, skill: str) -> None:
        row = s.get(Trajectory, trajectory_id)
        row.extraction, row.extraction_info = "extracted", {"action": action, "skill": skill, "similarity": 0.41}

    def evolution(self, s, day: float, kind: str, status: str, details: dict, minutes: float) -> None:
        s.add(EvolutionRun(kind=kind, status=status, details=details, started_at=self.at(day),
                           finished_at=None if status == "running" else self.at(day) + timedelta(minutes=minutes)))
        self.counts.evolution_runs += 1

    def evals(self, s, day: float, run_id: str, quality: float) -> None:
        base = {"none": 0.30, "icl": 0.38, "random": 0.31, "parametric": 0.36 + quality}
        for mode, value in base.items():
            for subtask in ("bug-localization", "bug-fixing", "test-writing", "code-review", "commit-message",
                            "refactoring"):
                v = min(0.95, max(0.0, value + self.rng.uniform(-0.05, 0.05)))
                s.add(EvalResult(run_id=run_id, mode=mode, split="heldout", subtask=subtask, metric="pass@1",
                                 value=round(v, 3), n=24, base_model=BASE_MODEL, hypernet_id=self.hypernet_id,
                                 details={}, created_at=self.at(day)))


def _task(repo: str) -> str:
    return {
        "roman": "from_roman('MCMXCIV') returns 2196 instead of 1994.",
        "semver": "compare('1.0.0-alpha.10', '1.0.0-alpha.2') says the first is smaller.",
        "lru": "The cache evicts a key that was just read.",
        "intervals": "merge([(5, 6), (1, 3), (2, 4)]) leaves overlapping intervals.",
        "csvish": "Rows with quoted commas get an extra column.",
        "ledger": "The balance of 0.1 + 0.2 prints as 0.30000000000000004.",
        "dates": "is_leap(1900) returns True.",
        "paginate": "page_count(11, 5) returns 2; the last item has no page.",
        "pqueue": "Write tests for equal-priority ordering in PriorityQueue.",
        "rle": "Write round-trip tests for the run-length encoder.",
        "matrix": "Review the new matmul helper for missing shape checks.",
        "stats": "median([1, 2, 3, 4]) returns 3.",
        "wrap": "wrap('a supercalifragilistic word', 10) drops the long word.",
        "textcase": "snake('HTTPServer') gives 'h_t_t_p_server'; refactor the splitter.",
        "calc": "Refactor the operator if-chain in the parser into a table.",
    }[repo]


def _fence(kind: str, body: str) -> str:
    return f"```{kind}\n{body}\n```"


def _script(rng: random.Random, repo: str, verified: bool, status: str) -> list[tuple[str, str, dict | None]]:
    """A linear message list like agent/runtime/loop.py records: system, task, then reply/observation pairs."""
    path = f"{repo}.py"
    msgs: list[tuple[str, str, dict | None]] = [
        ("system", "You are a coding agent working in a sandboxed repository. Reply with exactly one fenced "
                   "action block per turn: bash, read, edit, test or submit.", None),
        ("user", f"Task: {_task(repo)}\n\nTest command: python -m pytest -q\nCurrent test result:\n"
                 "1 failed, 4 passed in 0.05s\n\nThe repository is your current directory.", None),
    ]

    def act(thought: str, kind: str, arg: str, observation: str | None, extra: dict | None = None) -> None:
        action = {"kind": kind, "arg": arg} | (extra or {})
        body = arg if kind != "edit" else f"{arg}\n<<<<<<< SEARCH\n{extra['search']}\n=======\n" \
                                          f"{extra['replace']}\n>>>>>>> REPLACE"
        msgs.append(("assistant", f"{thought}\n\n{_fence(kind, body)}", action))
        if observation is not None:
            msgs.append(("user", observation, None))

    act("Let me see which test fails first.", "bash", "python -m pytest -q -x 2>&1 | tail -15",
        f"F\n___ test_{repo}_regression ___\n    assert result == expected\nE   AssertionError\n"
        f"{path}:14: AssertionError\n1 failed in 0.03s")
    act(f"The failure points into {path}; reading the function.", "read", f"{path}:1-30",
        "1  def solve(total, size):\n2      \"\"\"Main entry.\"\"\"\n...\n14     return total // size\n")
    if status == "format_errors":
        msgs.append(("assistant", "I think the bug is in the division, I will change it now.", None))
        msgs.append(("user", "Format error: no action found: reply with exactly one fenced block whose language "
                             "is one of bash, read, edit, test, submit (e.g. ```bash\\nls\\n```)", None))
        msgs.append(("assistant", "Changing the division.", None))
        return msgs
    if status == "loop":
        for _ in range(3):
            act("Reading it again.", "read", f"{path}:1-30", "1  def solve(total, size): ...")
        return msgs
    act("Truncating division drops the remainder; use ceiling division.", "edit", path, "edited 1 place",
        {"search": "    return total // size", "replace": "    return -(-total // size)"})
    act("Running the tests.", "test", "", "5 passed in 0.04s" if verified else "1 failed, 4 passed in 0.05s")
    if not verified and status == "step_limit":
        for n in range(rng.randint(1, 3)):
            act("Still failing; looking at the test.", "read", f"test_{repo}.py", f"def test_{repo}_{n}(): ...")
        return msgs
    act("The tests pass; submitting." if verified else "Submitting what I have.", "submit", "", None)
    return msgs


def fill(store: Store, anchor: datetime = DEMO_ANCHOR, seed: int = 7) -> DemoSummary:
    """Write the demo history into an empty store; refuses a store that already holds skills."""
    with store.session() as s:
        if s.query(Skill.id).first() is not None:
            raise StoreError(f"{store.url} already holds skills: the demo needs an empty database")
        b = _Builder(store, anchor, seed)
        rng = b.rng
        b.hypernet(s, 0.0, "stage1-pretrain", "stage1", metrics={"loss": 2.91})
        b.hypernet(s, 0.2, "stage2-single-turn", "stage2", metrics={"loss": 1.84})
        for i, spec in enumerate(SEED_SKILLS):
            b.skill(s, spec, "seed", 0.3 + i * 0.01)
        b.evals(s, 0.4, "eval-stage2", 0.02)

        # the agent's days: trajectories, extractions (with an occasional rejected or revised skill),
        # user additions, evolution runs; extracted skills come from verified trajectories
        extracted = iter(EXTRACTED_SKILLS)
        users = iter(USER_SKILLS)
        pending_wins: list[int] = []
        last_win = 0
        day = 0.5
        while day < DAYS - 0.05:
            pool = [n for n, r in b.skills.items() if r.status == "active"]
            tid = b.trajectory(s, day, pool)
            if tid:
                pending_wins.append(tid)
                last_win = tid
            if len(pending_wins) >= 3:
                spec = next(extracted, None)
                if spec is not None:
                    b.skill(s, spec, "extracted", day + 0.02,
                            provenance={"trajectories": [pending_wins[-1]], "support": 1, "origin": "trajectory"})
                    b.extracted(s, pending_wins[-1], "ADD", spec[0])
                    b.evolution(s, day + 0.01, "extract", "done",
                                {"trajectories": len(pending_wins), "skills_added": 1, "skill": spec[0]}, 3.5)
                    b.evolution(s, day + 0.03, "accumulate", "done",
                                {"ema_version": b.ema_version, "beta": EMA_BETA}, 0.4)
                elif rng.random() < 0.5:
                    b.evolution(s, day + 0.01, "extract", "done", {"trajectories": len(pending_wins),
                                                                   "skills_added": 0}, 2.0)
                pending_wins.clear()
            if rng.random() < 0.04:
                name = f"candidate-{rng.randint(100, 999)}"
                reason = rng.choice(REJECT_REASONS)
                b.skill(s, (name, "bug-fixing", "A rule extracted from one lucky run.", ["Do the thing."]),
                        "extracted", day + 0.01, status="rejected", reason=reason)
            if rng.random() < 0.05:
                spec = next(users, None)
                if spec is not None:
                    b.skill(s, spec, "user", day + 0.015)
            day += rng.uniform(0.08, 0.22)
            if 9.6 < day < 9.9 and b.hypernet_id == 2:
                b.evolution(s, 9.6, "retrain", "done", {"stage": "stage3", "samples": 412, "gate": "accepted",
                                                        "heldout_delta": 0.041}, 118.0)
                b.hypernet(s, 9.7, "stage3-multiturn-r1", "stage3", metrics={"loss": 1.31, "heldout": 0.47})
                b.evals(s, 9.75, "eval-r1", 0.11)
        # a revised extracted skill (version 2) and a hypernet candidate the gate turned down
        first = EXTRACTED_SKILLS[0]
        if first[0] in b.skills:
            prov = dict(b.skills[first[0]].provenance)
            prov = {**prov, "support": 2, "trajectories": prov.get("trajectories", []) + [last_win]}
            b.skill(s, first, "extracted", DAYS - 1.2, version=2, provenance=prov)
            b.extracted(s, last_win, "EDIT", first[0])
        b.evolution(s, DAYS - 0.9, "retrain", "failed",
                    {"stage": "stage3", "samples": 640, "gate": "rejected", "heldout_delta": -0.012}, 131.0)
        b.hypernet(s, DAYS - 0.85, "stage3-multiturn-r2", "stage3", status="rejected",
                   metrics={"loss": 1.22, "heldout": 0.45})
        pruned = b.prune_ema(s, keep_last=12, when=b.at(DAYS - 0.3))
        b.evolution(s, DAYS - 0.3, "compact", "done", {"ema_version": b.ema_version, "ema_blobs_pruned": pruned}, 1.1)
        b.evolution(s, DAYS - 0.02, "cycle", "running", {"phase": "extract"}, 0.0)
    add_demo_jobs(store.engine.url.render_as_string(hide_password=False), anchor)
    b.counts.jobs = 3
    return b.counts


def add_demo_jobs(url: str, anchor: datetime) -> None:
    """The daemon's four jobs as `agent daemon` leaves them in APScheduler's table (compaction paused)."""
    from apscheduler.triggers.interval import IntervalTrigger

    from agent.evolve.job_control import editing_scheduler

    try:  # the daemon's own job function, so `agent daemon` on a demo database keeps these jobs
        from agent.evolve.scheduler import FUNC_REF as ref
    except ImportError:
        ref = f"{__name__}:demo_job"
    scheduler = editing_scheduler(url)
    try:
        for name, every, next_in in (("extract", timedelta(minutes=10), timedelta(minutes=4)),
                                     ("accumulate", timedelta(minutes=30), timedelta(minutes=17)),
                                     ("retrain", timedelta(hours=24), timedelta(hours=15)),
                                     ("compact", timedelta(days=7), None)):
            scheduler.add_job(ref, IntervalTrigger(seconds=every.total_seconds(), timezone=timezone.utc), id=name,
                              name=name, args=[name], next_run_time=anchor + next_in if next_in else None)
    finally:
        scheduler.shutdown(wait=False)


def build(path: Path, anchor: datetime = DEMO_ANCHOR, seed: int = 7) -> DemoSummary:
    """A new SQLite demo database at `path` (which must not exist yet)."""
    if path.exists():
        raise StoreError(f"{path} already exists: the demo database must be a new file")
    if not path.parent.is_dir():
        raise StoreError(f"cannot create {path}: folder {path.parent} does not exist")
    from agent.tui.adapter_norms import one_torch_thread

    store = Store(f"sqlite:///{path}")
    try:
        with one_torch_thread():  # small QR/SVDs of the EMA steps: threads only add overhead
            return fill(store, anchor, seed)
    finally:
        store.close()
