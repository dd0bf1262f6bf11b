"""Training progress bars on rich (the project's one progress library), with the small tqdm-like surface the
training loops use: update(n), set_postfix(**values), close(). On stderr; a stream that is not a terminal
gets the finished bar once, not a redraw per step."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class Bar:
    def __init__(self, total: int, desc: str, initial: int = 0, leave: bool = True) -> None:
        self._progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                  TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[postfix]}"),
                                  console=Console(stderr=True), transient=not leave)
        self._task = self._progress.add_task(desc, total=total, completed=initial, postfix="")
        self._progress.start()

    def update(self, n: int = 1) -> None:
        self._progress.advance(self._task, n)

    def set_postfix(self, refresh: bool = False, **values: str) -> None:
        self._progress.update(self._task, postfix=" ".join(f"{k}={v}" for k, v in values.items()), refresh=refresh)

    def close(self) -> None:
        self._progress.stop()  # idempotent: the loops close in both their normal path and `finally`
