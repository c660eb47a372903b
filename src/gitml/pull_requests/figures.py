"""PNG figures of the evaluate plots, base revision beside this change, for the PR report.

DVC renders the same plot data as interactive Vega (`dvc plots diff`); a pull-request comment
needs plain images, so these are drawn with matplotlib from the same CSV files.
"""

from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on runners
import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.axes import Axes

from gitml.dataset import ERRORS_BY, TARGET
from gitml.files import write_atomic

Tables = dict[str, pd.DataFrame | None]
Draw = Callable[[Axes, pd.DataFrame], None]


def draw_predictions(ax: Axes, table: pd.DataFrame) -> None:
    ax.scatter(table["actual"], table["predicted"], s=4, alpha=0.4)
    top = float(max(table["actual"].max(), table["predicted"].max()))
    ax.plot([0, top], [0, top], color="grey", linewidth=1)
    ax.set(xlabel=f"actual {TARGET}", ylabel="predicted")


def draw_error_by_group(ax: Axes, table: pd.DataFrame) -> None:
    ax.plot(table["group"], table["model"], marker="o", markersize=3, label="model")
    ax.plot(table["group"], table["baseline"], linestyle="--", label="seasonal baseline")
    ax.set(xlabel=ERRORS_BY, ylabel="mean absolute error")
    ax.legend(fontsize="small")


def draw_importance(ax: Axes, table: pd.DataFrame) -> None:
    ordered = table.sort_values("mae_increase")
    ax.barh(ordered["feature"], ordered["mae_increase"])
    ax.set(xlabel="MAE increase when shuffled")


FIGURES: dict[str, tuple[str, Draw]] = {
    "predictions": ("Predicted vs actual", draw_predictions),
    "error_by_group": (f"Error by {ERRORS_BY}", draw_error_by_group),
    "importance": ("Permutation importance", draw_importance),
}


def render_comparison(base: Tables, new: Tables, out_dir: Path) -> list[Path]:
    """One PNG per plot: the base revision's panel (when it has the data) beside this change's.

    Returns:
        The PNG paths written, in FIGURES order.
    """
    written = []
    for name, (title, draw) in FIGURES.items():
        current = new.get(name)
        if current is None:
            continue
        previous = base.get(name)
        panels = [("this change", current)]
        if previous is not None:
            panels.insert(0, ("base", previous))
        fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6), squeeze=False)
        for ax, (label, table) in zip(axes[0], panels, strict=True):
            draw(ax, table)
            ax.set_title(f"{title} ({label})", fontsize="medium")
        fig.tight_layout()
        target = out_dir / f"{name}.png"
        write_atomic(target, lambda tmp, f=fig: f.savefig(tmp, format="png", dpi=100))  # type: ignore[misc]
        plt.close(fig)
        written.append(target)
    return written
