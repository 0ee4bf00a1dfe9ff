"""Charts of the reports as inline SVG, drawn by matplotlib's SVG backend (no browser, no display).

Text stays text in the SVG (``svg.fonttype: none``) so the page's fonts render it and the labels are
searchable; ids are salted with a fixed value so the same data gives the same SVG.
"""

from __future__ import annotations

import io

import matplotlib
from matplotlib.backends.backend_svg import FigureCanvasSVG
from matplotlib.figure import Figure

matplotlib.rcParams.update({"svg.fonttype": "none", "svg.hashsalt": "ipm-report", "font.size": 9})

COLOURS = {"main": "#2f6db5", "good": "#3a9d5d", "bad": "#c8443b", "muted": "#9aa5b1"}


def _svg(figure: Figure) -> str:
    FigureCanvasSVG(figure)
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    text = buffer.getvalue()
    return text[text.index("<svg") :]  # inline: no XML declaration nor doctype


def bars(title: str, labels: list[str], series: list[tuple[str, list[float], str]], ylabel: str = "") -> str:
    """Stacked bars: one bar per label, one stack per (name, values, colour key) of SERIES."""
    figure = Figure(figsize=(6.4, 2.8), dpi=96)
    axes = figure.add_subplot()
    bottoms = [0.0] * len(labels)
    positions = list(range(len(labels)))
    for name, values, colour in series:
        axes.bar(positions, values, bottom=bottoms, label=name, color=COLOURS.get(colour, colour), width=0.6)
        bottoms = [b + v for b, v in zip(bottoms, values, strict=True)]
    axes.set_xticks(
        positions, labels, rotation=30 if len(labels) > 6 else 0, ha="right" if len(labels) > 6 else "center"
    )
    axes.set_title(title)
    if ylabel:
        axes.set_ylabel(ylabel)
    axes.yaxis.get_major_locator().set_params(integer=True)
    axes.spines[["top", "right"]].set_visible(False)
    if len(series) > 1:
        axes.legend(frameon=False)
    if not labels:
        axes.text(0.5, 0.5, "-", ha="center", va="center", transform=axes.transAxes)
    return _svg(figure)
