"""Charts on textual-plotext, with series colours taken from the current theme.

A chart keeps its data and redraws on a theme change, so a light theme never leaves a pale line on
white. The legend goes in the panel's bottom border, where it cannot hide the data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, time, timedelta, timezone
from typing import Any

from rich.console import RenderableType

from textual.color import Color
from textual.content import Content
from textual_plotext import PlotextPlot

from agent.tui import timefmt

THEME_COLOURS = ("primary", "success", "accent", "error", "warning", "secondary")


@dataclass
class Series:
    label: str
    x: list[Any]
    y: list[float]
    right_axis: bool = False


@dataclass
class ChartData:
    series: list[Series] = field(default_factory=list)
    ylim: tuple[float, float] | None = None
    empty_text: str = "no data yet"


class Chart(PlotextPlot):
    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.data = ChartData()

    def on_mount(self) -> None:  # PlotextPlot's own on_mount runs too: Textual walks the MRO
        self.app.theme_changed_signal.subscribe(self, lambda _theme: self.replot())

    def show(self, data: ChartData) -> None:
        self.data = data
        self.replot()

    def colour(self, i: int) -> tuple[int, int, int]:
        name = THEME_COLOURS[i % len(THEME_COLOURS)]
        return Color.parse(self.app.theme_variables.get(name, "white")).rgb

    def setup_x(self, drawn: list[Series]) -> None:
        """Axis set-up before plotting (date formats, ticks)."""

    def x_values(self, s: Series) -> list[Any]:
        return s.x

    def replot(self) -> None:
        plt, data = self.plt, self.data
        plt.clear_data()
        plt.clear_figure()
        drawn = [s for s in data.series if s.x]
        self.setup_x(drawn)
        for i, s in enumerate(drawn):
            plt.plot(self.x_values(s), s.y, color=self.colour(i), yside="right" if s.right_axis else "left",
                     marker="hd")  # block quadrants: in every monospace font, unlike braille
        if not drawn:
            plt.text(data.empty_text, x=0.5, y=0.5, alignment="center")
            plt.xlim(0, 1)
            plt.ylim(0, 1)
            plt.xticks([])
            plt.yticks([])
        elif data.ylim:
            plt.ylim(*data.ylim)
        self.border_subtitle = self.legend(drawn)
        self.refresh()

    def legend(self, drawn: list[Series]) -> Content:
        if not drawn:
            return Content("")
        parts: list = []
        for i, s in enumerate(drawn):
            parts.append(("━ ", Color(*self.colour(i)).hex))
            parts.append(s.label + (" (right axis)" if s.right_axis and len(drawn) > 1 else ""))
            parts.append("  ")
        return Content.assemble(*parts[:-1])


DAY = 86400.0
MINUTE_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 180, 240, 360, 720)  # ticks on round local times of day
DAY_STEPS = (1, 2, 3, 7, 14, 28, 56, 91, 182, 364)  # ticks on local midnights
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
TICK_GAP = 3  # columns between two tick labels
Y_AXIS_COLUMNS = 8  # what the y labels and the frame take from a chart's width


@dataclass(frozen=True)
class TimeAxis:
    """The x axis of a chart over time: range and ticks in seconds since the epoch, labels in local time."""

    lo: float
    hi: float
    ticks: list[float]
    labels: list[str]
    note: str = ""  # the day (or days) when the labels are times of day; empty when they are dates


def _moment(naive_local: datetime) -> datetime:
    return naive_local.astimezone(timezone.utc)  # a naive datetime's astimezone reads it as local time


def _time_ticks(lo: float, hi: float, slots: int) -> list[datetime]:
    start = datetime.fromtimestamp(lo)  # naive local
    midnight = datetime.combine(start.date(), time())
    minutes = (start - midnight).total_seconds() / 60
    ticks: list[datetime] = []
    for step in MINUTE_STEPS:
        first = -(-int(minutes) // step) * step
        if first < minutes:
            first += step
        ticks = []
        t = midnight + timedelta(minutes=first)
        while t.timestamp() <= hi:
            ticks.append(t)
            t += timedelta(minutes=step)
        if len(ticks) <= slots:
            break
    return [_moment(t) for t in ticks]


def _day_ticks(lo: float, hi: float, slots: int) -> list[datetime]:
    day0 = datetime.fromtimestamp(lo).date()
    if datetime.combine(day0, time()).timestamp() < lo:
        day0 += timedelta(days=1)
    ticks: list[datetime] = []
    for step in DAY_STEPS:
        ticks, d = [], day0
        while datetime.combine(d, time()).timestamp() <= hi:
            ticks.append(datetime.combine(d, time()))
            d += timedelta(days=step)
        if len(ticks) <= slots:
            break
    return [_moment(t) for t in ticks]


def time_axis(times: list[datetime], width: int) -> TimeAxis:
    """Ticks for `times` on a plot `width` columns wide, labelled by the span.

    Within a day the labels are times of day (`HH:MM`, the day itself in `note`); across days they are
    dates (`YYYY-MM-DD`), on local midnights. A single moment gets the hour around it.
    """
    stamps = sorted(timefmt.as_utc(t).timestamp() for t in times)
    first, last = stamps[0], stamps[-1]
    lo, hi = (first, last) if last - first >= 60 else (first - 1800, last + 1800)
    across_days = hi - lo > DAY
    fmt = timefmt.date if across_days else timefmt.clock
    slots = max(1, (width + TICK_GAP) // (len(fmt(EPOCH)) + TICK_GAP))
    note = ""
    if across_days:
        ticks = _day_ticks(lo, hi, slots)
    else:
        ticks = _time_ticks(lo, hi, slots)
        days = sorted({timefmt.date(datetime.fromtimestamp(s, timezone.utc)) for s in (first, last)})
        note = " – ".join(days)
    return TimeAxis(lo, hi, [t.timestamp() for t in ticks], [fmt(t) for t in ticks], note)


class TimeChart(Chart):
    """Series over time, in local time: dates on the x axis, or times of day when it all fits in one.

    When the axis reads times of day, the day itself follows the title: "Skills over time · 2026-11-20".
    """

    def __init__(self, title: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.title = title
        self.border_title = title

    def times(self) -> list[datetime]:
        return [x for s in self.data.series for x in s.x]

    def x_values(self, s: Series) -> list[float]:
        return [timefmt.as_utc(x).timestamp() for x in s.x]

    def replot(self) -> None:
        times = self.times()
        note = time_axis(times, 80).note if times else ""
        self.border_title = f"{self.title} · {note}" if note else self.title
        super().replot()

    def render(self) -> RenderableType:
        times = self.times()
        if times:  # ticks depend on the width, known only now
            axis = time_axis(times, self.size.width - Y_AXIS_COLUMNS)
            self.plt.xlim(axis.lo, axis.hi)
            self.plt.xticks(axis.ticks, axis.labels)
        return super().render()


class VersionChart(Chart):
    """Series over integer versions (EMA v1, v2, ...), with whole-number ticks."""

    def setup_x(self, drawn: list[Series]) -> None:
        xs = sorted({x for s in drawn for x in s.x})
        if xs:
            step = max(1, (xs[-1] - xs[0]) // 5 or 1)
            self.plt.xticks(list(range(xs[0], xs[-1] + 1, step)))
