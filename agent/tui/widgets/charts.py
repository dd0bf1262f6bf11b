"""Charts on textual-plotext, with series colours taken from the current theme.

A chart keeps its data and redraws on a theme change, so a light theme never leaves a pale line on
white. The legend goes in the panel's bottom border, where it cannot hide the data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from textual.color import Color
from textual.content import Content
from textual_plotext import PlotextPlot

from agent.tui.timefmt import as_utc

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


class TimeChart(Chart):
    """Series over time; the x axis reads month-day in local time."""

    def setup_x(self, drawn: list[Series]) -> None:
        self.plt.date_form("Y-m-d H:M", "m-d")

    def x_values(self, s: Series) -> list[str]:
        return [as_utc(x).astimezone().strftime("%Y-%m-%d %H:%M") for x in s.x]


class VersionChart(Chart):
    """Series over integer versions (EMA v1, v2, ...), with whole-number ticks."""

    def setup_x(self, drawn: list[Series]) -> None:
        xs = sorted({x for s in drawn for x in s.x})
        if xs:
            step = max(1, (xs[-1] - xs[0]) // 5 or 1)
            self.plt.xticks(list(range(xs[0], xs[-1] + 1, step)))
