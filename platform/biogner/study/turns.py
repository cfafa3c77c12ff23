"""The turn-style reading: `multi` (one answer for all of a corpus's types) against `conv`
(one question per type) for the same writing, corpus and budget.

Why its own table: on a one-type corpus the two ask the same single question; on BC5CDR
(2 types) and JNLPBA (5) they differ in what the model sees and in cost (a conv sentence
costs a turn per type), so each pair is read on the same sentences (paired bootstrap)
beside both costs.
"""

from __future__ import annotations

from biogner.formats import FORMATS
from biogner.study.results import Cells, RunResult, corpus_order
from biogner.study.tables import MISSING, PairedTest, interval, num

CLEAR = 0.975  # P(conv better) above this, or below 1 - CLEAR: a real difference


def turn_pairs(cells: Cells) -> list[tuple[str, str, RunResult, RunResult]]:
    """(corpus, writing, multi, conv) for every single-format pair scored on one corpus."""
    singles: dict[tuple[str, str, str], RunResult] = {}
    for (_, corpus), r in cells.items():
        if r.is_mix or r.eval_format != r.formats[0] or r.eval_format not in FORMATS:
            continue
        fmt = FORMATS[r.eval_format]
        singles[(corpus, fmt.writing.name, fmt.turn)] = r
    pairs = [
        (corpus, writing, multi, singles[(corpus, writing, "conv")])
        for (corpus, writing, turn), multi in singles.items()
        if turn == "multi" and (corpus, writing, "conv") in singles
    ]
    return sorted(pairs, key=lambda p: (corpus_order(p[0]), p[1]))


def turns_markdown(metric: str, cells_by_model: dict[str, Cells], paired: PairedTest) -> str:
    """Per base model, each writing's multi and conv cells side by side; empty without pairs."""
    lines: list[str] = []
    for model in sorted(cells_by_model):
        pairs = turn_pairs(cells_by_model[model])
        if not pairs:
            continue
        lines += [
            "",
            f"### `{model}`",
            "",
            "| corpus | writing | F1 multi | F1 conv | conv - multi | P(conv better) | sentences "
            "| tok/entity multi / conv | sent/s multi / conv |",
            "|:---|:---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for corpus, writing, multi, conv in pairs:
            test = paired(conv, multi)
            p = MISSING if test is None else f"{test[0]:.3f}"
            n = num(multi.sentences, "d") if test is None else str(test[1])
            lines.append(
                f"| {corpus} | {writing} | {multi.value:.4f}{interval(multi)} | {conv.value:.4f}"
                f"{interval(conv)} | {conv.value - multi.value:+.4f} | {p} | {n} "
                f"| {num(multi.tokens_per_entity, '.1f')} / {num(conv.tokens_per_entity, '.1f')}"
                f" | {num(multi.sentences_per_s, '.2f')} / {num(conv.sentences_per_s, '.2f')} |"
            )
    if not lines:
        return ""
    head = [
        "## Turn style: multi vs conv",
        "",
        f"`{metric}` of the model trained in each writing's `multi_*` format against the one "
        "trained in its `conv_*` format (same corpus, same budget); P(conv better) by paired "
        f"bootstrap over the same sentences (a real difference above {CLEAR} or below "
        f"{1 - CLEAR:.3f}). Cost: generated tokens per gold entity and sentences/s.",
    ]
    return "\n".join(head + lines) + "\n"
