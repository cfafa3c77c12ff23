"""Generation at the speed limit: each mechanism of biogner's decode loop, timed against the
path before it on the same model, sentences and batches, with the answers compared.

Modes (`--modes`, in this order by default):
  before   transformers' generate, one token per forward pass, the grammar's mask at every
           step (`generation.decoder: hf`), no scores: the path before this bench's mechanisms
  loop     biogner's loop with every mechanism off
  +prefix  ... the shared-prefix cache
  +forced  ... and forced tokens
  +copy    ... and copy speculation (writings that restate the sentence)
  +mention ... and mention drafts (writings that quote mentions)
  after    every mechanism on (rows leave too): the default
  int8     after, with dynamic int8 Linear layers (`generation.quantize`; --dtype float32)
  free     after, decoding free (`generation.constrained: false`): what constraining costs
  unscored after without entity scores (`generation.scores: false`): what scoring costs
  nomention after without mention drafts (`generation.mention_draft_tokens: 0`)
  nogqa    after with transformers' key/value heads repeated per query head
           (`generation.gqa_kernel: false`; the rungs above all run without the kernel's
           grouped heads, so `after` over `+mention` is rows leaving and it together)
  nomemory after without the mention memory's drafts (`generation.mention_memory: false`)
  nopacked after with Linear weights unpacked (`generation.packed_linear: false`)
  join     after with rows joining the running batch (`generation.rows_join: true`)
Per format and mode: sentences/s, generated tokens/s, forward passes, tokens through the
model body and LM-head rows (from hooks on the model), GFLOP computed and achieved GFLOP/s
(2 x parameters x tokens: body and head apart; attention's length term left out), strict F1
with its 95 % bootstrap interval, and the sentences whose answer differs from `before`,
each with the first differing position's top-2 allowed logit gap (a near-tie that another
kernel shape breaks the other way is a gap of about one bf16 step).

`--profile N` then runs each mode again over the first N sentences under torch.profiler and
splits that run's wall time into matrix products (the Linear layers and the LM head),
attention, the other operators, and the time outside operators (Python: the loop, the
grammar, the model's module calls); "matmul-only s/s" is the rate if only the matrix
products cost time: the ceiling no decode loop reaches on this machine at these shapes
without computing less or faster arithmetic.

Usage: python -m bench.generation --model DIR [--formats multi_inline,multi_bio]
           [--corpus NCBI-disease] [--split dev] [--limit N] [--batch-size 16]
           [--before-batch-size 16] [--dtype auto] [--modes before,after] [--name generation]
           [--profile N]
`--cell FORMAT=DIR` (repeatable) times each format on the model trained in it.
Prints a table per format, writes bench/results/<name>.json. Run it alone on the machine.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.common import cpu_flags, table, write_json
from biogner.generation.packed import weights_in
from biogner.models.config import MECHANISMS_OFF

OFF = MECHANISMS_OFF
MODES: dict[str, dict[str, Any]] = {
    "before": {"decoder": "hf", "scores": False, "gqa_kernel": False, "packed_linear": False},
    "loop": OFF,
    "+prefix": {**OFF, "prefix_cache": True},
    "+forced": {**OFF, "prefix_cache": True, "forced_tokens": True},
    "+copy": {**OFF, "prefix_cache": True, "forced_tokens": True, "copy_draft_tokens": 8},
    "+mention": {
        **OFF,
        "prefix_cache": True,
        "forced_tokens": True,
        "copy_draft_tokens": 8,
        "mention_draft_tokens": 8,
    },
    "after": {},
    "int8": {"quantize": "int8"},  # after + int8 Linear layers (needs --dtype float32)
    "free": {"constrained": False},  # after, decoding free: what constraining costs
    "unscored": {"scores": False},  # after without entity scores: what scoring costs
    "nomention": {"mention_draft_tokens": 0},  # after without mention drafts: what they buy
    "nogqa": {"gqa_kernel": False},  # after with transformers' repeated key/value heads
    "nomemory": {"mention_memory": False},  # after without the mention memory's guesses
    # after with Linear weights unpacked: bf16 reordered every call, fp32 computed by MKL
    "nopacked": {"packed_linear": False},
    "join": {"rows_join": True},  # after with rows joining the running batch (a stream)
}
# the default modes: the path before, then the mechanisms one rung at a time, then all on
LADDER = list(MODES)[: list(MODES).index("after") + 1]
COLUMNS = [
    "mode",
    "sentences/s",
    "tokens/s",
    "x before",
    "forwards",
    "body tok",
    "head rows",
    "pad %",
    "GFLOP/sent",
    "GFLOP/s",
    "F1",
    "F1 95% CI",
    "differ",
]


class Counter:
    """Counts what the model computes: forward passes, tokens through the body, LM-head rows."""

    def __init__(self, model: Any) -> None:
        self.forwards = self.body_tokens = self.head_rows = self.real_tokens = 0
        body, head = model.base_model, model.get_output_embeddings()
        head_params = model.get_input_embeddings().weight.numel()  # tied: the same matrix
        self.body_params = weights_in(body) - head_params
        self.head_params = head_params
        body.register_forward_hook(self._body)
        head.register_forward_hook(self._head)

    def _body(self, _module: Any, _args: Any, kwargs_or_out: Any) -> None:
        self.forwards += 1

    def _head(self, _module: Any, args: Any, _out: Any) -> None:
        self.head_rows += int(args[0].shape[:-1].numel())

    def gflop(self) -> float:
        return 2e-9 * (self.body_params * self.body_tokens + self.head_params * self.head_rows)


def count_body_tokens(model: Any, counter: Counter) -> None:
    def pre(_module: Any, args: Any, kwargs: dict[str, Any]) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is not None:
            counter.body_tokens += int(ids.numel())
            mask = kwargs.get("attention_mask")
            real = mask[:, -ids.shape[1] :].sum() if mask is not None and mask.dim() == 2 else None
            counter.real_tokens += int(ids.numel() if real is None else real)

    model.base_model.register_forward_pre_hook(pre, with_kwargs=True)


def tie_gap(
    gen: Any,
    fmt: Any,
    sentence: Any,
    types: list[str],
    before: list[list[int]],
    after: list[list[int]],
) -> float | None:
    """The top-2 allowed logit gap where `after` first leaves `before` (teacher-forced on
    `before`, constrained, the model's own dtype); None when they differ only past an end."""
    import torch

    from biogner.chat_tokens import prompt_ids
    from biogner.generation.constraints import RowConstraint

    chat = [*fmt.opening()]
    questions = fmt.questions(sentence.text, types)
    for turn, (b, a) in enumerate(zip(before, after, strict=False)):
        chat.append({"role": "user", "content": questions[turn]})
        k = next((i for i in range(min(len(a), len(b))) if a[i] != b[i]), None)
        if k is None and len(a) == len(b):
            chat.append({"role": "assistant", "content": gen.tokenizer.decode(b)})
            continue
        if k is None:  # one is the other cut back: they parted after what was kept
            return None
        ids = prompt_ids(gen.tokenizer, chat) + b[:k]
        with torch.inference_mode():
            scores = gen.model(torch.tensor([ids])).logits[0, -1].float()
        if gen.cfg.constrained and fmt.writing.constrainable:
            row = RowConstraint(
                gen.vocabulary(), fmt.writing, sentence, fmt.turn_types(types)[turn]
            )
            for t in b[:k]:
                row.consume(t)
            scores = scores.masked_fill(~row.allowed(), float("-inf"))
        top = torch.topk(scores, 2).values
        return float(top[0] - top[1])
    return None


# Operators whose own time is a matrix product: torch's Linear (unpacked, packed, int8) and
# batched products; attention is counted apart, everything else is "other ops".
MATMUL_OPS = frozenset(
    {
        "aten::addmm",
        "aten::mm",
        "aten::bmm",
        "aten::_int_mm",
        "mkldnn::_linear_pointwise",
        "quantized::linear_dynamic",
    }
)
PROFILE_COLUMNS = [
    "mode",
    "sentences",
    "seconds",
    "matmul %",
    "attention %",
    "other ops %",
    "outside ops %",
    "matmul-only s/s",
]


def split_time(events: Any, wall: float) -> dict[str, float]:
    """Seconds of a profiled run by kind of operator (their own time, children apart; an
    operator's time is the wall time its call took on the calling thread, its intra-op
    threads included) and the rest of `wall`, outside operators."""
    kinds = {"matmul": 0.0, "attention": 0.0, "other ops": 0.0}
    for event in events:
        seconds = event.self_cpu_time_total / 1e6
        if event.key in MATMUL_OPS:
            kinds["matmul"] += seconds
        elif "scaled_dot_product" in event.key:
            kinds["attention"] += seconds
        else:
            kinds["other ops"] += seconds
    kinds["outside ops"] = max(wall - sum(kinds.values()), 0.0)
    return kinds


def profile_mode(
    gen: Any, fmt: str, sentences: list, types: list[str], mode: str
) -> dict[str, Any]:
    """The same generator over `sentences` again, under torch.profiler: where its time goes."""
    from torch.profiler import ProfilerActivity, profile

    from biogner.generation.memory import MentionMemory

    gen.memory = MentionMemory()  # as the timed run: learning from its own answers only
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        gen.extract(sentences, fmt, types)
        wall = time.perf_counter() - start
    kinds = split_time(prof.key_averages(), wall)
    return {
        "mode": mode,
        "sentences": len(sentences),
        "seconds": wall,
        **{f"{kind} %": 100 * seconds / wall for kind, seconds in kinds.items()},
        "matmul-only s/s": len(sentences) / max(kinds["matmul"], 1e-9),
        "split_seconds": kinds,
    }


def run_mode(
    model_dir: Path,
    fmt: str,
    sentences: list,
    types: list[str],
    args: argparse.Namespace,
    mode: str,
) -> tuple[dict[str, Any], list, Any]:
    from biogner.evaluate.metrics import Scorer, bootstrap_f1
    from biogner.generation import Generator
    from biogner.generation.memory import MentionMemory
    from biogner.models.config import GenerationConfig

    batch = args.before_batch_size if mode == "before" and args.before_batch_size else None
    cfg = GenerationConfig(batch_size=batch or args.batch_size, dtype=args.dtype, **MODES[mode])
    gen = Generator(model_dir, cfg)
    counter = Counter(gen.model)
    count_body_tokens(gen.model, counter)
    gen.extract(sentences[: args.batch_size], fmt, types)  # warm-up: vocabulary, prefix, kernels
    gen.memory = MentionMemory()  # the timed run learns from its own answers only
    counter.forwards = counter.body_tokens = counter.head_rows = counter.real_tokens = 0
    start = time.perf_counter()
    out = gen.extract(sentences, fmt, types)
    seconds = time.perf_counter() - start
    scorer = Scorer()
    for g in out:
        scorer.add(g.sentence.id, g.sentence.spans, g.parse.spans, g.parse)
    scores = scorer.scores
    low, high = bootstrap_f1(scores.per_sentence)
    generated = sum(g.generated_tokens for g in out)
    n = len(sentences)
    row = {
        "mode": mode,
        "seconds": seconds,
        "sentences/s": n / seconds,
        "tokens/s": generated / seconds,
        "generated_tokens": generated,
        "forwards": counter.forwards,
        "body tok": counter.body_tokens,
        "head rows": counter.head_rows,
        "pad %": 100 * (1 - counter.real_tokens / max(counter.body_tokens, 1)),
        "GFLOP/sent": counter.gflop() / n,
        "GFLOP/s": counter.gflop() / seconds,
        "F1": scores.overall.f1,
        "F1 95% CI": f"{low:.3f}-{high:.3f}",
        "f1_low": low,
        "f1_high": high,
        "overruled": scores.overruled,
    }
    if args.profile:
        row["profile"] = profile_mode(gen, fmt, sentences[: args.profile], types, mode)
    return row, out, gen


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path)
    parser.add_argument("--cell", action="append", default=[], help="FORMAT=DIR")
    parser.add_argument("--formats", default="multi_inline")
    parser.add_argument("--corpus", default="NCBI-disease")
    parser.add_argument("--split", default="dev")
    parser.add_argument("--limit", type=int, default=None, help="first N only (a quick look)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument(
        "--before-batch-size",
        type=int,
        help="the batch of the `before` mode (default: --batch-size): the path users had "
        "batched 16 before the loop's default became 64",
    )
    parser.add_argument("--dtype", default="auto")
    parser.add_argument(
        "--modes",
        default=",".join(LADDER),
    )
    parser.add_argument("--name", default="generation")
    parser.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="N",
        help="also profile each mode over the first N sentences: its time by kind of operator",
    )
    args = parser.parse_args(argv)

    from biogner.corpora import CORPORA, load_split, resolve_data_dir
    from biogner.formats import FORMATS, get_format
    from biogner.models.load import cpu_has_native_bf16

    cells = {f: Path(d) for f, d in (c.split("=", 1) for c in args.cell)}
    formats = list(cells) or (sorted(FORMATS) if args.formats == "all" else args.formats.split(","))
    modes = args.modes.split(",")
    corpus = CORPORA[args.corpus]
    types = list(corpus.entity_types)
    sentences = load_split(corpus, args.split, resolve_data_dir(), limit=args.limit)
    cpu = {"native_bf16": cpu_has_native_bf16(), "flags": cpu_flags()}
    print(
        f"{args.corpus} {args.split}: {len(sentences)} sentences, "
        f"{sum(len(s.spans) for s in sentences)} mentions; batch {args.batch_size}; "
        f"dtype {args.dtype}; cpu {cpu}"
    )
    report: dict[str, Any] = {
        "corpus": args.corpus,
        "split": args.split,
        "sentences": len(sentences),
        "limit": args.limit,
        "batch_size": args.batch_size,
        "before_batch_size": args.before_batch_size or args.batch_size,
        "dtype": args.dtype,
        "cpu": cpu,
        "formats": {},
    }
    for fmt in formats:
        model_dir = cells.get(fmt, args.model)
        rows, outputs = [], {}
        for mode in modes:
            row, out, gen = run_mode(model_dir, fmt, sentences, types, args, mode)
            outputs[mode] = out
            base = outputs.get(modes[0])
            if base is not None and mode != modes[0]:
                differ = [
                    i
                    for i, (a, b) in enumerate(zip(base, out, strict=True))
                    if a.answer_tokens != b.answer_tokens or a.answers != b.answers
                ]
                row["differ"] = len(differ)
                row["x before"] = row["sentences/s"] / rows[0]["sentences/s"]
                row["differing"] = [
                    {
                        "sentence": base[i].sentence.id,
                        "before": base[i].answers,
                        "after": out[i].answers,
                        # the same tokens, other answers: the steered items were counted
                        # (and dropped) otherwise, not a token chosen otherwise
                        "same_tokens": base[i].answer_tokens == out[i].answer_tokens,
                        "top2_gap": tie_gap(
                            gen,
                            get_format(fmt),
                            base[i].sentence,
                            types,
                            base[i].answer_tokens,
                            out[i].answer_tokens,
                        ),
                    }
                    for i in differ[:20]
                ]
            else:
                row["differ"], row["x before"] = 0, 1.0
            rows.append(row)
            print(f"  {fmt} {mode}: {row['sentences/s']:.2f} sentences/s", flush=True)
        print(f"\n{fmt} ({model_dir})")
        print(table(rows, COLUMNS))
        if args.profile:
            print(f"\n{fmt}: where the time goes (first {args.profile} sentences, profiled)")
            print(table([r["profile"] for r in rows], PROFILE_COLUMNS))
        for row in rows:
            for case in row.get("differing", []):
                kind = "same tokens" if case["same_tokens"] else f"top-2 gap {case['top2_gap']}"
                print(f"  {row['mode']}: {case['sentence']} {kind}")
        report["formats"][fmt] = {"model": str(model_dir), "modes": rows}
        path = write_json(args.name, report)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
