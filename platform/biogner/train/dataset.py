"""Training rows on Ray Data: converted shards -> format mix -> tokenized chats."""

from __future__ import annotations

import hashlib
from typing import Any

from biogner.chat_tokens import tokenize_chat
from biogner.corpora import get_corpus
from biogner.data import ConvertConfig, convert, read_rows, shard_is_current
from biogner.models.load import load_tokenizer
from biogner.train.config import TrainConfig


def ensure_converted(cfg: TrainConfig) -> None:
    """Convert the (corpus, split, format) slices the run needs and the shards lack or hold
    in an older rendering (another prompt or writing version). A user's corpus (a card that
    is not built in) is converted every time: its files change under the same name, and a
    slice's first row could not tell."""
    d = cfg.data
    cards = {ref: get_corpus(ref) for ref in d.corpora}
    missing = [
        (ref, fmt)
        for ref, card in cards.items()
        for fmt in d.formats
        if not card.builtin
        or not shard_is_current(d.converted_dir, card.name, d.split, fmt, card.entity_types)
    ]
    for corpus, fmt in missing:
        convert(
            ConvertConfig(
                corpora=[corpus],
                formats=[fmt],
                splits=[d.split],
                data_dir=d.data_dir,
                out=d.converted_dir,
            )
        )


def sentence_index(sentence_id: str) -> int:
    """`NCBI-disease-train-41` -> 41 (ids are `<corpus>-<split>-<n>`)."""
    return int(sentence_id.rsplit("-", 1)[1])


def mix_choice(sentence_id: str, n_formats: int, seed: int) -> int:
    """Which format of the mix trains this sentence: a seeded hash, stable across runs."""
    digest = hashlib.sha256(f"{seed}:{sentence_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % n_formats


def sample_indices(corpus: str, count: int, n: int | None, seed: int) -> frozenset[int] | None:
    """The indices of the `n` sentences (of `count`) a corpus trains on: the `n` smallest
    seeded hashes, so the sample is the same at every resume and grows by adding sentences
    when `n` grows. None: every sentence."""
    if n is None or n >= count:
        return None

    def rank(i: int) -> bytes:
        return hashlib.sha256(f"{seed}:sample:{corpus}:{i}".encode()).digest()

    return frozenset(sorted(range(count), key=rank)[:n])


class Tokenize:
    """Ray Data map_batches actor: chat rows -> input_ids/labels (assistant tokens only)."""

    def __init__(self, model_spec: str, cache_dir: str | None, max_length: int) -> None:
        self.tokenizer = load_tokenizer(model_spec, cache_dir)
        self.max_length = max_length

    def __call__(self, batch: dict[str, Any]) -> dict[str, list]:
        out: dict[str, list] = {"id": [], "input_ids": [], "labels": [], "length": []}
        out["truncated"] = []
        for rid, messages in zip(batch["id"], batch["messages"], strict=True):
            chat = [{"role": str(m["role"]), "content": str(m["content"])} for m in messages]
            toks = tokenize_chat(self.tokenizer, chat, self.max_length)
            out["id"].append(str(rid))
            out["input_ids"].append(toks["input_ids"])
            out["labels"].append(toks["labels"])
            out["length"].append(len(toks["input_ids"]))
            out["truncated"].append(bool(toks["truncated"]))
        return out


def training_dataset(cfg: TrainConfig) -> tuple[Any, dict[str, int]]:
    """The materialized tokenized dataset and its counts (rows, dropped as too long)."""
    import ray

    d = cfg.data
    ensure_converted(cfg)
    formats = list(d.formats)
    seed = cfg.optim.seed
    parts = []
    for corpus in d.corpora:
        ds = read_rows(d.converted_dir, corpus, d.split, formats)
        limit = d.limit
        sample = None
        if d.sentences_per_corpus is not None:
            count = read_rows(d.converted_dir, corpus, d.split, formats[:1]).count()
            count = count if limit is None else min(count, limit)
            name = get_corpus(corpus).name
            sample = sample_indices(name, count, d.sentences_per_corpus, seed)

        def keep(
            row: dict[str, Any], limit: int | None = limit, sample: frozenset[int] | None = sample
        ) -> bool:
            sid = str(row["sentence_id"])
            index = sentence_index(sid)
            if limit is not None and index >= limit:
                return False
            if sample is not None and index not in sample:
                return False
            return (
                len(formats) == 1 or formats[mix_choice(sid, len(formats), seed)] == row["format"]
            )

        parts.append(ds.filter(keep).select_columns(["id", "messages"]))
    ds = parts[0].union(*parts[1:]) if len(parts) > 1 else parts[0]
    ds = ds.map_batches(
        Tokenize,
        fn_constructor_args=(cfg.model.spec, cfg.model.cache_dir, d.max_length),
        batch_size=128,
        compute=ray.data.ActorPoolStrategy(size=1),
    )
    ds = ds.materialize()
    total = ds.count()
    kept = ds.filter(lambda r: not r["truncated"]).drop_columns(["truncated"]).materialize()
    n = kept.count()
    if n == 0:
        raise ValueError(
            f"no training rows: corpora {d.corpora}, formats {d.formats}, split {d.split}, "
            f"limit {d.limit}, max_length {d.max_length}"
        )
    return kept, {"rows": n, "dropped_too_long": total - n}
