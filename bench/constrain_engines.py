"""Which kept engine can constrain an answer to spans of its sentence, and at what cost?

For every sentence, the grammar of a one-type `term` answer (the conv_term writing): `None`, or
one mention per line where each mention is a span of the sentence on its token boundaries,
written as the text writes it. The regular expression is built the same way for every engine:
for each start token i, `t_i(s_i t_{i+1}(s_{i+1} ...)?)?` (s_i the text between two tokens),
and the alternatives of all starts. Per engine, with the SmolLM2 tokenizer:

- setup: the engine's tokenizer/vocabulary conversion, once;
- compile: the per-sentence grammar -> a matcher (median and p90 over the sentences);
- mask: one next-token mask (median over every step of every gold answer);
- correctness: every token of every gold answer is allowed, the end token is allowed after
  it, and a corrupted mention (its last character changed) is refused somewhere.

Usage: python -m bench.constrain_engines [--engines llguidance,xgrammar,outlines-core]
           [--split dev] [--limit N]
Prints a table, writes bench/results/constrain_engines.json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from bench.common import table, write_json

REGEX_META = set("\\.+*?()|[]{}^$#&-~/\"'")


def escape(text: str) -> str:
    """Escape for all three engines' regex dialects: meta characters only, newline as \\n."""
    out = []
    for ch in text:
        if ch == "\n":
            out.append("\\n")
        elif ch in REGEX_META:
            out.append("\\" + ch)
        else:
            out.append(ch)
    return "".join(out)


def span_regex(text: str, offsets: Sequence[tuple[int, int]]) -> str:
    """Every span of the sentence on token boundaries, as one regular expression."""
    starts = []
    for i in range(len(offsets)):
        expr = ""
        for j in range(len(offsets) - 1, i - 1, -1):
            tok = escape(text[offsets[j][0] : offsets[j][1]])
            if j == len(offsets) - 1:
                expr = tok
            else:
                gap = escape(text[offsets[j][1] : offsets[j + 1][0]])
                expr = f"{tok}({gap}{expr})?"
        starts.append(expr)
    return "(" + "|".join(f"({s})" for s in starts) + ")"


def answer_regex(text: str, offsets: Sequence[tuple[int, int]]) -> str:
    span = span_regex(text, offsets)
    return f"(None|{span}(\\n{span})*)"


def allowed_in(bitmask: Any) -> Callable[[int], bool]:
    """Whether a token is allowed by the first row of a packed 32-bit-word bitmask."""
    words = bitmask[0].tolist()
    return lambda t: bool((words[t // 32] >> (t % 32)) & 1)


class Engine:
    name: str

    def setup(self, tokenizer: Any, vocab_size: int, eos: int) -> None: ...
    def compile(self, regex: str) -> Any: ...
    def mask(self, state: Any) -> Callable[[int], bool]: ...
    def advance(self, state: Any, token: int) -> bool: ...


class LLGuidance(Engine):
    name = "llguidance"

    def setup(self, tokenizer: Any, vocab_size: int, eos: int) -> None:
        import llguidance
        import llguidance.hf
        import llguidance.torch

        self.ll = llguidance
        self.tok = llguidance.hf.from_tokenizer(tokenizer, n_vocab=vocab_size, eos_token=eos)
        self.bitmask = llguidance.torch.allocate_token_bitmask(1, vocab_size)

    def compile(self, regex: str) -> Any:
        m = self.ll.LLMatcher(self.tok, self.ll.LLMatcher.grammar_from_regex(regex), log_level=0)
        if m.is_error():
            raise ValueError(m.get_error())
        return m

    def mask(self, state: Any) -> Callable[[int], bool]:
        self.ll.torch.fill_next_token_bitmask(state, self.bitmask, 0)
        return allowed_in(self.bitmask)

    def advance(self, state: Any, token: int) -> bool:
        return bool(state.consume_token(token))


class XGrammar(Engine):
    name = "xgrammar"

    def setup(self, tokenizer: Any, vocab_size: int, eos: int) -> None:
        import xgrammar as xgr

        self.xgr = xgr
        info = xgr.TokenizerInfo.from_huggingface(
            tokenizer, vocab_size=vocab_size, stop_token_ids=[eos]
        )
        self.compiler = xgr.GrammarCompiler(info, max_threads=1, cache_enabled=False)
        self.bitmask = xgr.allocate_token_bitmask(1, vocab_size)

    def compile(self, regex: str) -> Any:
        return self.xgr.GrammarMatcher(self.compiler.compile_regex(regex))

    def mask(self, state: Any) -> Callable[[int], bool]:
        state.fill_next_token_bitmask(self.bitmask)
        return allowed_in(self.bitmask)

    def advance(self, state: Any, token: int) -> bool:
        return bool(state.accept_token(token))


class OutlinesCore(Engine):
    name = "outlines-core"

    def setup(self, tokenizer: Any, vocab_size: int, eos: int) -> None:
        import outlines_core as oc
        import torch

        self.oc = oc
        tokens: dict[bytes, list[int]] = {}
        for tid in range(len(tokenizer)):
            if tid == eos:
                continue
            piece = tokenizer.convert_ids_to_tokens(tid)
            tokens.setdefault(byte_level_bytes(piece), []).append(tid)
        self.vocab = oc.Vocabulary(eos, tokens)
        self.eos = eos
        self.bitmask = torch.zeros((1, (vocab_size + 31) // 32), dtype=torch.int32)

    def compile(self, regex: str) -> Any:
        return self.oc.Guide(self.oc.Index(regex, self.vocab))

    def mask(self, state: Any) -> Callable[[int], bool]:
        state.write_mask_into(self.bitmask.data_ptr(), self.bitmask.numel(), 4)
        return allowed_in(self.bitmask)

    def advance(self, state: Any, token: int) -> bool:
        try:
            state.advance(token, return_tokens=False)
        except Exception:
            return False
        return True


def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet: printable bytes stand for themselves, the others
    (space, control characters, ...) for the code points from 256 on, in byte order."""
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
    chars = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in chars:
            chars[b] = chr(256 + extra)
            extra += 1
    return {c: b for b, c in chars.items()}


BYTE_DECODER = _byte_decoder()


def byte_level_bytes(piece: str) -> bytes:
    """The bytes a byte-level BPE piece stands for (Ġ -> space, ...); special tokens as is."""
    if all(c in BYTE_DECODER for c in piece):
        return bytes(BYTE_DECODER[c] for c in piece)
    return piece.encode()


ENGINES: dict[str, type[Engine]] = {
    "llguidance": LLGuidance,
    "xgrammar": XGrammar,
    "outlines-core": OutlinesCore,
}


def run_engine(engine: Engine, cases: list[dict[str, Any]], eos: int) -> dict[str, Any]:
    compile_s, mask_s = [], []
    refused_gold = accepted_bad = compile_errors = 0
    for case in cases:
        t0 = time.perf_counter()
        try:
            state = engine.compile(case["regex"])
        except Exception as exc:
            compile_errors += 1
            case.setdefault("errors", []).append(f"{engine.name}: {type(exc).__name__}: {exc}")
            continue
        compile_s.append(time.perf_counter() - t0)
        ok = True
        for token in [*case["gold"], eos]:
            t0 = time.perf_counter()
            allowed = engine.mask(state)
            mask_s.append(time.perf_counter() - t0)
            if not allowed(token):
                ok = False
                break
            if token != eos and not engine.advance(state, token):
                ok = False
                break
        refused_gold += not ok
        bad_state = engine.compile(case["regex"])
        for token in [*case["bad"], eos]:
            if not engine.mask(bad_state)(token):
                break
            if token != eos and not engine.advance(bad_state, token):
                break
        else:
            accepted_bad += 1
    return {
        "engine": engine.name,
        "sentences": len(cases),
        "compile_errors": compile_errors,
        "compile_ms_median": 1e3 * statistics.median(compile_s) if compile_s else None,
        "compile_ms_p90": 1e3 * statistics.quantiles(compile_s, n=10)[-1]
        if len(compile_s) > 1
        else None,
        "mask_us_median": 1e6 * statistics.median(mask_s) if mask_s else None,
        "gold_refused": refused_gold,
        "corrupt_accepted": accepted_bad,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument("--corpus", default="NCBI-disease")
    parser.add_argument("--split", default="dev")
    parser.add_argument("--limit", type=int, help="first N sentences (default: the whole split)")
    parser.add_argument("--data-dir")
    args = parser.parse_args(argv)

    from transformers import AutoConfig, AutoTokenizer

    from biogner.corpora import load_split
    from biogner.formats import get_format
    from biogner.models.load import resolve_model_dir

    model_dir = resolve_model_dir("smollm2-135m")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    vocab_size = AutoConfig.from_pretrained(model_dir).vocab_size
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    fmt = get_format("conv_term")
    sentences = load_split(args.corpus, args.split, args.data_dir, args.limit)
    cases = []
    for s in sentences:
        if not s.tokens:
            continue
        answer = fmt.answers(s, ["Disease"])[0]
        lines = answer.split("\n")
        corrupt = "\n".join([*lines[:-1], lines[-1][:-1] + ("q" if lines[-1][-1] != "q" else "z")])
        cases.append(
            {
                "regex": answer_regex(s.text, s.token_offsets()),
                "gold": tokenizer.encode(answer, add_special_tokens=False),
                "bad": tokenizer.encode(corrupt, add_special_tokens=False),
            }
        )
    rows = []
    for name in args.engines.split(","):
        engine = ENGINES[name]()
        t0 = time.perf_counter()
        engine.setup(tokenizer, vocab_size, eos)
        setup_s = time.perf_counter() - t0
        row = run_engine(engine, cases, eos)
        row["setup_s"] = setup_s
        rows.append(row)
        print(f"{name}: done", flush=True)
    columns = [
        "engine",
        "sentences",
        "setup_s",
        "compile_ms_median",
        "compile_ms_p90",
        "mask_us_median",
        "compile_errors",
        "gold_refused",
        "corrupt_accepted",
    ]
    print(table(rows, columns))
    errors = [e for c in cases for e in c.get("errors", [])][:5]
    for e in errors:
        print("  ", e[:300])
    path = write_json(
        "constrain_engines",
        {"corpus": args.corpus, "split": args.split, "limit": args.limit, "rows": rows},
    )
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
