"""Adapter norms as a layers × modules heat map, coloured from the theme so it reads in light and dark."""

from __future__ import annotations

from textual.color import Color
from textual.content import Content
from textual.widgets import Static

from agent.tui.adapter_norms import AdapterNorms

BAR = 8  # characters of the bar drawn beside each value


class NormHeatmap(Static):
    DEFAULT_CSS = """
    NormHeatmap { height: auto; width: 100%; }
    """

    def __init__(self, **kwargs) -> None:
        super().__init__("", **kwargs)
        self.norms: AdapterNorms | None = None

    def on_mount(self) -> None:
        self.app.theme_changed_signal.subscribe(self, lambda _theme: self.show(self.norms))

    def show(self, norms: AdapterNorms | None) -> None:
        self.norms = norms
        self.update(self.render_norms(norms) if norms else Content("no adapter for this skill yet"))

    def render_norms(self, norms: AdapterNorms) -> Content:
        layers, modules, cells = norms.grid()
        if not cells:  # keys in a layout this map does not know: a plain list
            return Content("\n".join(f"{k}  {v:.3f}" for k, v in sorted(norms.per_module.items())))
        top = max(cells.values()) or 1.0
        variables = self.app.theme_variables
        low, high = Color.parse(variables["surface"]), Color.parse(variables["primary"])
        cell = BAR + 8
        header = "layer " + "".join(f"{m:<{cell}}" for m in modules) + "total"
        lines = [Content.styled(header, "bold")]
        for layer in layers:
            parts: list = [f"{layer:>5} "]
            for module in modules:
                value = cells.get((layer, module))
                if value is None:
                    parts.append(" " * cell)
                    continue
                # the background carries the value at a glance, the digits exactly, the bar in proportion
                shade = low.blend(high, 0.2 + 0.8 * value / top)
                filled = max(1, round(BAR * value / top))
                parts.append((f"{value:6.3f}", f"{shade.get_contrast_text(1.0).hex} on {shade.hex}"))
                parts.append(" ")
                parts.append(("▇" * filled, high.hex))
                parts.append(" " * (cell - 7 - filled))
            row_total = sum(cells.get((layer, m), 0.0) ** 2 for m in modules) ** 0.5
            parts.append(f"{row_total:.3f}")
            lines.append(Content.assemble(*parts))
        return Content("\n").join(lines)
