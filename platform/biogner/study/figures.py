"""The study's figures: a format x corpus F1 heatmap and an F1-versus-cost scatter per model.

Drawn on `Figure` objects with the Agg canvas: no pyplot global state, no display needed.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from biogner.study.results import Cells, corpus_order, row_order


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def heatmap_png(cells: Cells, model: str, metric: str, path: Path) -> Path:
    """Format x corpus heatmap of the metric; empty cells stay blank."""
    rows = {r.format: r for r in cells.values()}
    labels = sorted(rows, key=lambda label: row_order(rows[label]))
    corpora = sorted({c for _, c in cells}, key=corpus_order)
    data = np.full((len(labels), len(corpora)), np.nan)
    for (label, c), r in cells.items():
        data[labels.index(label), corpora.index(c)] = r.value
    # room for the row labels (a mix's can be long) beside the cells and the colour bar
    label_width = 0.075 * max(len(label) for label in labels)
    fig = _figure(1.5 + label_width + 1.4 * len(corpora), 1.5 + 0.45 * len(labels))
    ax = fig.add_subplot()
    image = ax.imshow(np.ma.masked_invalid(data), cmap="viridis", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(len(corpora)), corpora, rotation=30, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    for i in range(len(labels)):
        for j in range(len(corpora)):
            if not math.isnan(data[i, j]):
                color = "black" if data[i, j] > 0.6 else "white"
                ax.text(j, i, f"{data[i, j]:.3f}", ha="center", va="center", color=color)
    ax.set_title(f"{metric}: {model}")
    fig.colorbar(image, ax=ax, label=metric)
    fig.savefig(path, format="png")
    return path


def scatter_png(cells: Cells, model: str, metric: str, path: Path) -> Path:
    """Metric versus cost: generated tokens per entity, and throughput (sentences/s)."""
    fig = _figure(11, 4.5)
    axes = fig.subplots(1, 2, sharey=True)
    corpora = sorted({c for _, c in cells}, key=corpus_order)
    panels = (
        (axes[0], "tokens_per_entity", "generated tokens per entity (lower is cheaper)"),
        (axes[1], "sentences_per_s", "sentences per second (higher is faster)"),
    )
    for ax, attr, xlabel in panels:
        for k, c in enumerate(corpora):
            points = [
                (getattr(r, attr), r.value, label)
                for (label, rc), r in cells.items()
                if rc == c and getattr(r, attr) is not None
            ]
            if not points:
                continue
            ax.scatter([p[0] for p in points], [p[1] for p in points], label=c, color=f"C{k % 10}")
            for x, y, name in points:
                ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, 3), fontsize=7)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(metric)
    axes[0].legend(title="corpus", fontsize=8)
    fig.suptitle(f"{metric} versus cost: {model}")
    fig.savefig(path, format="png")
    return path
