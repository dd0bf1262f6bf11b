"""`agent daemon`: the scheduler's jobs in a background thread, the submitted-task queue in the main one.

Stopping (Ctrl-C, SIGTERM, or `Daemon.stop()`): the stop flag is set; the running job returns after its
current item (each job checks the flag between items, and each item is one transaction), a running task
stops before its next model call (its trajectory is kept, the task goes back to the queue), the scheduler
shuts down waiting for its job, and the process exits. A second Ctrl-C exits at once (crash-safe: see below).

On start the daemon hands back what a killed predecessor left: tasks it was running go back to the queue,
its unfinished job runs are marked interrupted (their work items were never marked, so they are redone).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from agent.evolve import scheduler as sched
from agent.evolve.context import EvolveContext
from agent.evolve.cycle import JobReport
from memory import evolution as evo_repo
from memory import queue as queue_repo

log = logging.getLogger(__name__)


class StopRequested(Exception):
    """Raised into a running solve at its next model call once the daemon is asked to stop."""


class StoppableChat:
    def __init__(self, chat, stop: threading.Event) -> None:
        self.chat_model, self.stop = chat, stop

    def chat(self, messages):
        if self.stop.is_set():
            raise StopRequested("the daemon is stopping")
        return self.chat_model.chat(messages)


@dataclass(frozen=True)
class QueuedView:
    id: int
    repo: str
    task: str
    options: dict[str, Any]


@dataclass(frozen=True)
class SolveOutcome:
    trajectory_id: int | None
    status: str
    verified: bool


Solver = Callable[[EvolveContext, QueuedView], SolveOutcome]
ChatFactory = Callable[[EvolveContext, QueuedView], Any]


def make_solver(chat_factory: ChatFactory | None = None) -> Solver:
    """Solve a queued task as `agent solve` would: retrieved skills, adapters applied, sandboxed loop."""

    def solver(ctx: EvolveContext, item: QueuedView) -> SolveOutcome:
        import sys

        from agent.runtime import loop, skill_context
        from agent.runtime.solve import SolveRequest, solve

        opts = item.options
        mode = opts.get("mode", "parametric")
        request = SolveRequest(repo=Path(item.repo), task=item.task, mode=mode, model_name=ctx.model_name,
                               test_cmd=opts.get("test_cmd"), python=opts.get("python") or sys.executable,
                               sandbox=True,  # never from the queue: anyone who can submit could ask for it
                               limits=loop.Limits(steps=int(opts.get("max_steps", 20)),
                                                  seconds=float(opts.get("max_seconds", 900))))
        with ctx.model_lock:  # the adapters are in the shared model's weights for the whole solve (torch)
            loaded = handle = None
            if chat_factory is None:
                loaded = ctx.loaded()
                handle = ctx.handle() if mode == "parametric" else None
            elif mode == "parametric":
                mode = request.mode = "none"  # a scripted or remote chat takes no adapters
            policy = None
            if chat_factory is None:
                from agent.runtime.local_chat import default_backend, load_policy, open_local_chat

                policy = load_policy(None, loaded)
            scale = skill_context.SKILL_SCALE_UNDER_POLICY if policy is not None else 1.0
            skills, skill_lora = skill_context.build(ctx.store, mode, item.task, int(opts.get("top_k", 3)), loaded,
                                                     handle, scale)
            if chat_factory is not None:
                chat_cm = contextlib.nullcontext(chat_factory(ctx, item))
            else:
                adapters = [a for a in (policy, skill_lora) if a is not None]
                chat_cm = open_local_chat(loaded, adapters, backend=opts.get("backend") or default_backend(loaded.name),
                                          max_new_tokens=int(opts.get("max_new_tokens", 256)))
            with chat_cm as chat:
                report = solve(request, ctx.store, StoppableChat(chat, ctx.stop_event), skills)
        return SolveOutcome(report.trajectory_id, report.status, report.verified)

    return solver


class Daemon:
    def __init__(self, ctx: EvolveContext, config: sched.DaemonConfig, solver: Solver | None = None,
                 say: Callable[[str], None] | None = None) -> None:
        self.ctx, self.config = ctx, config
        self.solver = solver or make_solver()
        self.say = say or (lambda text: log.info("%s", text))
        self.scheduler = None
        self.worker = evo_repo.worker_id()
        self._signals = 0

    # --- lifetime ------------------------------------------------------------------------------------
    def start(self) -> dict[str, str]:
        with self.ctx.store.session() as s:
            requeued = queue_repo.requeue_dead(s, evo_repo.worker_alive)
            interrupted = evo_repo.recover_runs(s)
        if requeued or interrupted:
            self.say(f"recovered: {len(requeued)} task(s) back in the queue, {len(interrupted)} job run(s) "
                     "marked interrupted")
        self.scheduler = sched.make_scheduler(self.ctx.store)
        self.scheduler.start(paused=True)
        actions = sched.sync_jobs(self.scheduler, self.config)
        sched.activate(self.ctx, self._report)
        self.scheduler.resume()
        return actions

    def stop(self) -> None:
        self.ctx.stop_event.set()

    def shutdown(self) -> None:
        if self.scheduler is not None:
            self.scheduler.pause()  # no new job is handed to the executor while it shuts down
            self.scheduler.shutdown(wait=True)  # waits for the running job, which stops after its step
            self.scheduler = None
        sched.activate(None)

    def _report(self, report: JobReport) -> None:
        d = report.details
        brief = {k: v for k, v in d.items() if k in ("counts", "error", "gated", "folded", "errors") and v}
        if "folded" in brief:
            brief["folded"] = [f"{f['skill']} -> v{f['version']}" for f in brief["folded"]]
        if report.name == "compact":
            brief = {k: v for k, v in d.items() if v}
        if report.status == "ok" and not brief:
            return  # an idle run: nothing to tell (it is still an EvolutionRun row)
        self.say(f"job {report.name}: {report.status} {brief or d.get('skipped', '')}".rstrip())

    # --- the queue ------------------------------------------------------------------------------------
    def step(self) -> bool:
        """Claim and run one queued task; False when the queue is empty."""
        with self.ctx.store.session() as s:
            row = queue_repo.claim_next(s, self.worker)
            item = QueuedView(row.id, row.repo, row.task, dict(row.options or {})) if row else None
        if item is None:
            return False
        if item.options.get("no_sandbox"):
            # a queued task is anyone's who can write the queue; unconfined runs are for `agent solve` in person
            reason = ("refused: queued tasks always run in the sandbox, and this one asks for no_sandbox "
                      "(run it with `agent solve --no-sandbox` yourself if you must)")
            with self.ctx.store.session() as s:
                queue_repo.finish(s, item.id, status="failed", error=reason)
            self.say(f"task {item.id}: {reason}")
            return True
        self.say(f"task {item.id}: solving {item.task!r} in {item.repo}")
        try:
            out = self.solver(self.ctx, item)
        except StopRequested:
            with self.ctx.store.session() as s:
                queue_repo.finish(s, item.id, status="queued")
            self.say(f"task {item.id}: stopped; back in the queue")
            return True
        except Exception as exc:  # noqa: BLE001 - a bad task fails alone; the daemon goes on
            with self.ctx.store.session() as s:
                queue_repo.finish(s, item.id, status="failed", error=f"{type(exc).__name__}: {exc}"[:2000])
            self.say(f"task {item.id}: failed: {exc}")
            return True
        with self.ctx.store.session() as s:
            queue_repo.finish(s, item.id, status="done", trajectory_id=out.trajectory_id)
        self.say(f"task {item.id}: {out.status}, verified={out.verified} (trajectory {out.trajectory_id})")
        return True

    def run(self, install_signals: bool = True) -> None:
        """Until stopped: run queued tasks, and let the scheduler's thread run the jobs."""
        previous = self._install_signals() if install_signals else {}
        try:
            actions = self.start()
            self.say("jobs: " + ", ".join(f"{k} {v}" for k, v in actions.items()))
            try:
                while not self.ctx.stopping():
                    if self.step():
                        continue
                    # pick up changes other processes made to the job store (pause, resume, run-now)
                    self.scheduler.wakeup()
                    self.ctx.stop_event.wait(self.config.poll_s)
            finally:
                self.say("stopping: waiting for the current step to finish")
                self.shutdown()
                self.say("stopped")
        finally:
            for signum, old in previous.items():  # an embedding process (a test, a notebook) gets Ctrl-C back
                signal.signal(signum, old)

    def _install_signals(self) -> dict:
        """Stop cleanly on SIGINT/SIGTERM; returns the handlers it replaced."""
        if threading.current_thread() is not threading.main_thread():
            return {}

        def handler(signum, _frame) -> None:
            self._signals += 1
            if self._signals > 1:
                # a second Ctrl-C: exit now. Safe: every result is written in one transaction with its claim,
                # so what was in flight is simply redone by the next daemon.
                self.say("stopping now")
                os._exit(130)
            self.say(f"{signal.Signals(signum).name}: stopping after the current step (Ctrl-C again to force)")
            self.stop()

        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
        signal.signal(signal.SIGINT, handler)
        signal.signal(signal.SIGTERM, handler)
        return previous
