"""A screen whose data comes from the store: loaded in a thread worker, shown on the UI thread."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Callable, ClassVar, Protocol

from textual.screen import Screen
from textual.worker import Worker, WorkerState

from agent.tui.adapter_norms import NormCache
from agent.tui.reader import Reader
from agent.tui.widgets.navbar import NavBar


class StoreApp(Protocol):
    """What a screen reads from the app (the app imports the screens, so they name this, not the app)."""

    db_label: str
    reader: Reader
    norms: NormCache
    clock: Callable[[], datetime]


class DataScreen(Screen):
    MODE: ClassVar[str] = ""

    @property
    def tui(self) -> StoreApp:
        return self.app  # type: ignore[return-value]

    def nav(self) -> NavBar:
        return NavBar(self.MODE, self.tui.db_label)

    def on_mount(self) -> None:
        # table cells carry colours resolved from the theme, so a new theme means rebuilt rows
        self.app.theme_changed_signal.subscribe(self, lambda _theme: self.on_theme_change())

    def on_screen_resume(self) -> None:
        self.reload()

    def on_theme_change(self) -> None:
        self.forget()
        self.reload()

    def forget(self) -> None:
        """Drop what `show` keeps to skip redrawing unchanged data."""

    def reload(self) -> None:
        """Start a fresh load; a load still running for this screen is superseded."""
        self.run_worker(self.load, thread=True, exclusive=True, group="load", exit_on_error=False)

    def load(self) -> Any:
        """Runs in a worker thread: read the store, return plain data. No widgets here."""
        raise NotImplementedError

    def show(self, data: Any) -> None:
        """Runs on the UI thread with what `load` returned."""
        raise NotImplementedError

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        worker = event.worker
        if worker.state == WorkerState.SUCCESS:
            handler = getattr(self, f"show_{worker.group}", None) if worker.group != "load" else self.show
            if handler is not None:
                handler(worker.result)
        elif worker.state == WorkerState.ERROR:
            # a locked or vanished database should not take the TUI down; say so and keep the last data
            error = worker.error
            text = str(error).splitlines()[0] if str(error) else type(error).__name__
            self.notify(f"could not read the store: {text}", severity="error", timeout=6)
