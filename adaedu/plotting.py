"""Plotting helpers: one readable style, the paper's value as a reference line, explorers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import matplotlib.pyplot as plt

#: Colour-blind-safe palette (Okabe & Ito 2008), used for experts and methods throughout.
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]
PAPER_COLOR = "#555555"


def use_style() -> None:
    """Set the course's matplotlib style: large labels, light grid, no top/right spines."""
    plt.rcParams.update(
        {
            "figure.figsize": (6.4, 4.0),
            "figure.dpi": 100,
            "savefig.dpi": 100,
            "axes.grid": True,
            "grid.alpha": 0.3,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "axes.titlesize": 12,
            "axes.labelsize": 11,
            "legend.fontsize": 9,
            "legend.frameon": False,
            "axes.prop_cycle": plt.cycler(color=PALETTE),
        }
    )


def paper_line(ax: plt.Axes, value: float, label: str = "paper", axis: str = "y") -> None:
    """Draw the paper's value as a dashed grey reference line, labelled in the legend."""
    if axis not in ("x", "y"):
        raise ValueError(f"axis={axis!r}; allowed values: 'x', 'y'")
    draw = ax.axhline if axis == "y" else ax.axvline
    draw(value, color=PAPER_COLOR, linestyle="--", linewidth=1.2, label=label, zorder=1)


def explorer(draw: Callable[..., Any], static: list[dict[str, Any]], **controls: Any) -> None:
    """An interactive explorer with a static fallback.

    ``draw(**values)`` makes one plot. The static fallback calls it once for each settings dict
    in ``static`` (so readers on GitHub, or without widgets, see the effect); in a live kernel with
    ipywidgets, sliders built from ``controls`` (``ipywidgets.interact`` abbreviations such as
    ``(0.0, 1.0, 0.05)``) redraw it.
    """
    if not static:
        raise ValueError("static must list at least one settings dict for the fallback figures")
    for values in static:
        draw(**values)
        plt.show()
    try:
        import ipywidgets
        from IPython import get_ipython
    except ImportError:
        return
    if get_ipython() is not None:
        ipywidgets.interact(draw, **controls)
