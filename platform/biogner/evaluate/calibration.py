"""How far an entity's score can be trusted: calibration on a scored split.

A score is useful as a threshold (`min_score`) if entities scored 0.9 are right about 90 % of
the time. Over every predicted entity of a split (each correct or not under the strict
metric): precision per score decile beside the decile's mean score, the expected calibration
error (the deciles' gaps weighted by their sizes), and precision, recall and F1 at each
threshold, which is what a user trades when raising `min_score`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

BINS = 10
THRESHOLDS = tuple(round(0.05 * k, 2) for k in range(20))  # 0.00, 0.05, ..., 0.95


@dataclass(frozen=True)
class Decile:
    low: float
    high: float
    count: int
    mean_score: float
    precision: float


@dataclass(frozen=True)
class ThresholdPoint:
    threshold: float
    kept: int
    precision: float
    recall: float
    f1: float


@dataclass
class Calibration:
    scored: int  # predicted entities with a score
    gold: int
    ece: float
    deciles: list[Decile] = field(default_factory=list)
    thresholds: list[ThresholdPoint] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {
            "scored": self.scored,
            "gold": self.gold,
            "ece": self.ece,
            "deciles": [vars(d) for d in self.deciles],
            "thresholds": [vars(t) for t in self.thresholds],
        }

    def markdown(self) -> str:
        lines = [
            f"Calibration of entity scores: {self.scored} predicted entities, {self.gold} gold "
            f"mentions, expected calibration error {self.ece:.3f}.",
            "",
            "| score | entities | mean score | precision |",
            "| --- | ---: | ---: | ---: |",
        ]
        for d in self.deciles:
            precision = f"{d.precision:.3f}" if d.count else "-"
            mean = f"{d.mean_score:.3f}" if d.count else "-"
            lines.append(f"| [{d.low:.1f}, {d.high:.1f}) | {d.count} | {mean} | {precision} |")
        lines += ["", "| min_score | kept | P | R | F1 |", "| ---: | ---: | ---: | ---: | ---: |"]
        for t in self.thresholds:
            lines.append(
                f"| {t.threshold:.2f} | {t.kept} | {t.precision:.3f} | {t.recall:.3f} | "
                f"{t.f1:.3f} |"
            )
        return "\n".join(lines) + "\n"


def calibrate(scored: Sequence[tuple[float, bool]], gold: int) -> Calibration:
    """`scored`: (score, correct) per predicted entity; `gold`: gold mentions of the split."""
    deciles = []
    gap = 0.0
    for k in range(BINS):
        low, high = k / BINS, (k + 1) / BINS
        inside = [(s, ok) for s, ok in scored if low <= s < high or (k == BINS - 1 and s == 1.0)]
        mean = sum(s for s, _ in inside) / len(inside) if inside else 0.0
        precision = sum(ok for _, ok in inside) / len(inside) if inside else 0.0
        gap += len(inside) * abs(precision - mean)
        deciles.append(Decile(low, high, len(inside), mean, precision))
    points = []
    for t in THRESHOLDS:
        kept = [ok for s, ok in scored if s >= t]
        correct = sum(kept)
        p = correct / len(kept) if kept else 0.0
        r = correct / gold if gold else 0.0
        points.append(ThresholdPoint(t, len(kept), p, r, 2 * p * r / (p + r) if p + r else 0.0))
    ece = gap / len(scored) if scored else 0.0
    return Calibration(len(scored), gold, ece, deciles, points)


def calibration_figure(calibration: Calibration, title: str) -> Figure:
    """Reliability diagram (precision per decile against its mean score) and the
    precision-recall points by threshold."""
    fig = Figure(figsize=(9, 4))
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2)
    filled = [d for d in calibration.deciles if d.count]
    left.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="calibrated")
    left.plot(
        [d.mean_score for d in filled], [d.precision for d in filled], marker="o", label="model"
    )
    left.set_xlabel("mean score of the decile")
    left.set_ylabel("precision")
    left.set_title(f"reliability (ECE {calibration.ece:.3f})")
    left.set_xlim(0, 1)
    left.set_ylim(0, 1)
    left.legend(loc="upper left")
    right.plot(
        [t.recall for t in calibration.thresholds],
        [t.precision for t in calibration.thresholds],
        marker=".",
    )
    for t in calibration.thresholds[::4]:
        right.annotate(f"{t.threshold:.2f}", (t.recall, t.precision), fontsize=7)
    right.set_xlabel("recall")
    right.set_ylabel("precision")
    right.set_title("by min_score")
    fig.suptitle(title)
    fig.tight_layout()
    return fig
