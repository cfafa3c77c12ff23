"""Multi-format training against one format: the study's second question -- does training on
several formats at once help? -- read per format on the same sentences.

Each multi-format model, scored in each of its formats, beside the model trained on that
format alone with the same budget: both F1s with their intervals, the difference and the
paired-bootstrap probability that the mix is better.
"""

from __future__ import annotations

from biogner.study.config import format_label
from biogner.study.results import Cells, RunResult, corpus_order, row_order
from biogner.study.tables import MISSING, NOT_AVAILABLE, PairedTest, interval, num, pair

# P(mix better) beyond these bounds (paired bootstrap) reads as a real difference
CLEAR_WIN = 0.975
CLEAR_LOSS = 0.025


def mix_markdown(metric: str, constrained: dict[str, Cells], paired: PairedTest) -> str:
    """Each multi-format model against the model trained on that one format alone.

    Why: the study's second question -- does training on several formats at once help? -- is
    answered per format on the same sentences: both F1s with their intervals, the difference
    and the paired-bootstrap probability that the mix is better (`paired(mix, single)`)."""
    lines = [
        "## Multi-format training vs one format",
        "",
        f"`{metric}` of each multi-format model scored in each of its formats, against the model "
        "trained on that format alone with the same budget; P(mix better) by paired bootstrap "
        f"over the same sentences (a real difference when above {CLEAR_WIN} or below "
        f"{CLEAR_LOSS}).",
    ]
    for model in sorted(constrained):
        cells = constrained[model]
        singles = {
            (r.formats[0], c): r
            for (_, c), r in cells.items()
            if not r.is_mix and r.eval_format == r.formats[0]
        }
        # one table per mix and corpus, its formats in the tables' row order
        tables: dict[tuple[str, str], list[RunResult]] = {}
        for r in sorted((r for r in cells.values() if r.is_mix), key=row_order):
            tables.setdefault((format_label(r.formats), r.corpus), []).append(r)
        for (mix_label, corpus), rows in sorted(
            tables.items(), key=lambda kv: (kv[0][0], corpus_order(kv[0][1]))
        ):
            lines += _mix_table(model, mix_label, corpus, rows, singles, paired)
    return "\n".join(lines) + "\n"


def _mix_table(
    model: str,
    mix_label: str,
    corpus: str,
    rows: list[RunResult],
    singles: dict[tuple[str, str], RunResult],
    paired: PairedTest,
) -> list[str]:
    lines = [
        "",
        f"### `{model}` {mix_label} on {corpus}",
        "",
        "| format | F1 one format | F1 mix | mix - one | P(mix better) | sentences "
        "| tok/entity one / mix |",
        "|:---|---:|---:|---:|---:|---:|---:|",
    ]
    wins = losses = compared = 0
    for mix in rows:
        single = singles.get((mix.eval_format, corpus))
        if single is None:
            lines.append(
                f"| `{mix.eval_format}` | {MISSING} | {mix.value:.4f}{interval(mix)} "
                f"| {MISSING} | {MISSING} | {num(mix.sentences, 'd', NOT_AVAILABLE)} "
                f"| {MISSING} / {num(mix.tokens_per_entity, '.1f', NOT_AVAILABLE)} |"
            )
            continue
        test = paired(mix, single)
        p_text, n_text = (NOT_AVAILABLE, num(mix.sentences, "d", NOT_AVAILABLE))
        if test is not None:
            p, n = test
            p_text, n_text = f"{p:.3f}", str(n)
            compared += 1
            wins += p > CLEAR_WIN
            losses += p < CLEAR_LOSS
        lines.append(
            f"| `{mix.eval_format}` | {single.value:.4f}{interval(single)} "
            f"| {mix.value:.4f}{interval(mix)} | {mix.value - single.value:+.4f} | {p_text} "
            f"| {n_text} | {pair(single.tokens_per_entity, mix.tokens_per_entity, '.1f')} |"
        )
    if compared:
        lines += [
            "",
            f"Of {compared} formats compared, the mix is clearly better in {wins}, clearly worse "
            f"in {losses}, and within the noise in {compared - wins - losses}.",
        ]
    return lines
