"""What to do with the items constrained decoding had to steer: one constrained pass over a
whole split, every overrule logged (position, the model's choice, the grammar's), then the
answers scored under each rule of which overrules drop their item. Rules are compared on dev
(bench/results/archive/quality.md, "What the constraint does where it overrules the model",
#11); `generation.overruled` is the one chosen.

    python -m bench.overruled --model <hf model dir> --split dev [--threads 2]

Prints a table and writes JSON (default bench/results/overruled_<format>_<split>.json).
One pass serves every rule: dropping only removes items from the text, the tokens are the
same (tests/test_constrain.py checks that on a random model).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from biogner.corpora import get_corpus, load_split
from biogner.evaluate.metrics import Scorer
from biogner.formats import get_format
from biogner.generation import Generator
from biogner.generation import constraints as constrain
from biogner.models.card import read_card
from biogner.models.config import GenerationConfig

# An event: (position in the answer's tokens, the model's choice, the grammar's choice,
# whether the model's choice would have ended its item).
Event = tuple[int, str, str, bool]
RULES: dict[str, Callable[[Event], bool]] = {
    "keep every item": lambda e: False,
    "drop on any overrule": lambda e: True,
    "drop unless the case was set right": lambda e: not constrain.spells_alike(e[1], e[2]),
    "drop where the model tried to end": lambda e: e[3],
}


def logged_pass(
    model: str, fmt: str, split: str, threads: int | None, corpus_name: str
) -> tuple[list[dict[str, Any]], float, Any]:
    """Generate the split constrained (keeping every item), recording every overrule."""
    corpus = get_corpus(corpus_name)
    sentences = load_split(corpus, split, None, None)
    cfg = GenerationConfig(batch_size=32, threads=threads, overruled="keep")
    gen = Generator(model, cfg)
    events: dict[tuple[str, tuple[str, ...]], list[Event]] = {}
    original = constrain.RowConstraint.overrule

    def overrule(self: constrain.RowConstraint, wanted: int, chosen: int) -> None:
        decode = self.vocab.tokenizer.decode
        key = (self.sentence.id, tuple(self.types))
        unended = len(self.unended)
        original(self, wanted, chosen)
        event = (len(self.tokens), decode([wanted]), decode([chosen]), len(self.unended) > unended)
        events.setdefault(key, []).append(event)

    constrain.RowConstraint.overrule = overrule  # type: ignore[method-assign]
    start = time.perf_counter()
    try:
        out = gen.extract(sentences, fmt, list(corpus.entity_types))
    finally:
        constrain.RowConstraint.overrule = original  # type: ignore[method-assign]
    seconds = time.perf_counter() - start
    turn_types = get_format(fmt).turn_types(list(corpus.entity_types))
    rows = [
        {
            "sentence": g.sentence,
            "tokens": g.answer_tokens,
            "events": [events.get((g.sentence.id, tuple(t)), []) for t in turn_types],
        }
        for g in out
    ]
    return rows, seconds, gen.vocabulary()


def score_rule(
    rows: list[dict[str, Any]], fmt: str, types: list[str], vocab: Any, rule: Any
) -> dict[str, float]:
    format_ = get_format(fmt)
    scorer = Scorer()
    for row in rows:
        answers, dropped = [], 0
        for tokens, events in zip(row["tokens"], row["events"], strict=True):
            text = vocab.tokenizer.decode(tokens)
            starts = constrain.char_starts(vocab, tokens)
            ranges = [
                (starts[e[0]], max(starts[e[0] + 1], starts[e[0]] + 1))
                for e in events
                if e[0] < len(tokens) and rule(e)
            ]
            kept, n = format_.writing.without_items(text, ranges)
            answers.append(kept.strip())
            dropped += n
        sentence = row["sentence"]
        parse = format_.parse(answers, sentence, types)
        parse.overruled = parse.dropped = dropped
        scorer.add(sentence.id, sentence.spans, parse.spans, parse)
    return scorer.scores.as_metrics()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="a biogner HF model directory")
    parser.add_argument("--split", default="dev")
    parser.add_argument("--corpus", default="NCBI-disease")
    parser.add_argument("--threads", type=int)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    fmt = read_card(Path(args.model)).format
    torch.manual_seed(0)
    rows, seconds, vocab = logged_pass(args.model, fmt, args.split, args.threads, args.corpus)
    types = list(get_corpus(args.corpus).entity_types)
    results = {name: score_rule(rows, fmt, types, vocab, r) for name, r in RULES.items()}
    n_gold = sum(len(r["sentence"].spans) for r in rows)
    split = f"{args.corpus}/{args.split}"
    print(f"{fmt} on {split}: {len(rows)} sentences, {n_gold} gold, {seconds:.0f} s")
    print("| rule | F1 [95 % CI] | P | R | items dropped |")
    print("| --- | --- | ---: | ---: | ---: |")
    for name, m in results.items():
        print(
            f"| {name} | {m['f1']:.4f} [{m['f1_low']:.3f}, {m['f1_high']:.3f}] "
            f"| {m['precision']:.3f} | {m['recall']:.3f} | {m['overruled_rate']:.3f} |"
        )
    out = args.json or Path(__file__).parent / "results" / f"overruled_{fmt}_{args.split}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": fmt, "split": args.split, "corpus": args.corpus, "model": args.model}
    payload |= {"sentences": len(rows), "gold": n_gold, "seconds": seconds, "rules": results}
    out.write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
