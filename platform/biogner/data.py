"""Ray Data conversion: corpora x splits x formats -> chat rows -> Parquet shards.

One row per (sentence, format): everything training needs (the chat), everything evaluation
needs (text, tokens, gold spans, entity types) and what the study reports (entity count,
chat tokens when a tokenizer is given). Shards are hive-partitioned by corpus/split/format
so a job reads exactly the slice it trains or evaluates on.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from biogner.corpora import CORPORA, get_corpus, load_split
from biogner.corpora.data_dir import resolve_data_dir
from biogner.corpora.registry import SPLITS
from biogner.formats import FORMATS, get_format
from biogner.formats.coverage import require_clean
from biogner.models.load import load_tokenizer
from biogner.prompts import render_chat
from biogner.types import Sentence, Span

PARTITION_COLS = ["corpus", "split", "format"]


class ConvertConfig(BaseModel):
    corpora: list[str] = Field(default_factory=lambda: ["NCBI-disease"])
    formats: list[str] = Field(default_factory=lambda: ["conv_term"])
    splits: list[str] = Field(default_factory=lambda: list(SPLITS))
    data_dir: str | None = None
    out: str = ".biogner/converted"
    limit: int | None = Field(None, ge=1, description="first N sentences per corpus split")
    tokenizer: str | None = Field(None, description="model spec whose tokenizer counts tokens")
    overwrite: bool = True

    def resolved(self) -> ConvertConfig:
        """Expand `all` and validate names early, with the list of known ones; a card's
        path becomes absolute (a Ray worker reads it from another working directory)."""
        corpora = list(CORPORA) if self.corpora == ["all"] else self.corpora
        formats = list(FORMATS) if self.formats == ["all"] else self.formats
        for name in formats:
            get_format(name)
        refs = [get_corpus(c).ref for c in corpora]
        return self.model_copy(update={"corpora": refs, "formats": formats})


def sentence_row(
    sentence: Sentence, corpus: str, split: str, entity_types: Sequence[str]
) -> dict[str, Any]:
    return {
        "sentence_id": sentence.id,
        "corpus": corpus,
        "split": split,
        "text": sentence.text,
        "tokens": list(sentence.tokens),
        "spans": [{"start": s.start, "end": s.end, "label": s.label} for s in sentence.spans],
        "entity_types": list(entity_types),
    }


def row_sentence(row: dict[str, Any]) -> Sentence:
    """Rebuild the Sentence a converted row came from."""
    spans = [Span(int(s["start"]), int(s["end"]), str(s["label"])) for s in row["spans"]]
    return Sentence.from_tokens(str(row["sentence_id"]), list(row["tokens"]), spans)


def render_rows(
    sentence: Sentence,
    corpus: str,
    split: str,
    formats: Sequence[str],
    types: Sequence[str] | None = None,
) -> Iterator[dict]:
    """One row per format for one sentence, asking `types` (default: the corpus card's)."""
    types = list(types if types is not None else get_corpus(corpus).types)
    base = sentence_row(sentence, corpus, split, types)
    for name in formats:
        fmt = get_format(name)
        messages = fmt.render(sentence, types)
        yield {
            **base,
            "id": f"{sentence.id}:{name}",
            "format": name,
            "entity_types": types,
            "messages": messages,
            "target": "\n\n".join(m["content"] for m in messages if m["role"] == "assistant"),
            "n_entities": len(sentence.spans),
        }


@dataclass(frozen=True)
class FileTask:
    corpus: str  # the corpus's reference: a name, or a card's absolute path
    split: str
    data_dir: str
    limit: int | None


def file_tasks(cfg: ConvertConfig) -> list[FileTask]:
    """The (corpus, split) slices to read, each corpus checked first (`corpora check`): a
    corpus whose problems would lose annotations, or a missing file, fails here, before
    Ray starts work."""
    data_dir = str(resolve_data_dir(cfg.data_dir).resolve())
    tasks = []
    for ref in cfg.corpora:
        card = get_corpus(ref)
        missing = [s for s in cfg.splits if s not in card.declared_splits]
        if missing:
            raise KeyError(f"corpus {card.name} has no {missing} split(s)")
        require_clean(card, data_dir, formats=cfg.formats)
        tasks += [FileTask(ref, split, data_dir, cfg.limit) for split in cfg.splits]
    return tasks


def read_task(task: dict[str, Any]) -> list[dict[str, Any]]:
    """Ray Data flat_map: a (corpus, split) slice -> sentence rows."""
    card = get_corpus(task["corpus"])
    sents = load_split(card, task["split"], task["data_dir"], limit=task["limit"])
    types = list(card.types)
    return [sentence_row(s, card.name, task["split"], types) for s in sents]


class RenderBatch:
    """Ray Data map_batches callable: sentence rows -> rows for every format (+ token counts)."""

    def __init__(self, formats: Sequence[str], tokenizer: str | None = None) -> None:
        self.formats = list(formats)
        self.tokenizer = None
        if tokenizer:
            self.tokenizer = load_tokenizer(tokenizer)
            self._render_chat = render_chat

    def __call__(self, batch: dict[str, Any]) -> dict[str, list]:
        out: dict[str, list] = {}
        n = len(batch["sentence_id"])
        for i in range(n):
            row = {k: batch[k][i] for k in batch}
            sent = row_sentence(row)
            rows = render_rows(sent, row["corpus"], row["split"], self.formats, row["entity_types"])
            for rendered in rows:
                if self.tokenizer is not None:
                    chat = self._render_chat(self.tokenizer, rendered["messages"], False)
                    rendered["n_tokens"] = len(self.tokenizer(chat)["input_ids"])
                for k, v in rendered.items():
                    out.setdefault(k, []).append(v)
        return out


def build_dataset(cfg: ConvertConfig):
    """The lazy Ray Dataset of converted rows."""
    import ray

    tasks = file_tasks(cfg)
    files = ray.data.from_items([t.__dict__ for t in tasks], override_num_blocks=len(tasks))
    blocks = max(2, min(64, (os.cpu_count() or 2) * 2))
    ds = files.flat_map(read_task).repartition(blocks)
    fn_args = (cfg.formats, cfg.tokenizer)
    if cfg.tokenizer:
        return ds.map_batches(
            RenderBatch,
            fn_constructor_args=fn_args,
            batch_size=256,
            compute=ray.data.ActorPoolStrategy(size=1),
        )
    return ds.map_batches(RenderBatch(*fn_args), batch_size=256)


@dataclass
class ConvertSummary:
    rows: list[dict[str, Any]]
    seconds: float
    out: str

    @property
    def total_rows(self) -> int:
        return sum(int(r["rows"]) for r in self.rows)

    def table(self) -> str:
        has_tokens = any("tokens" in r for r in self.rows)
        header = ["corpus", "split", "format", "rows", "entities"] + (
            ["tokens"] if has_tokens else []
        )
        lines = [[str(r.get(h, "")) for h in header] for r in self.rows]
        widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]
        fmt = "  ".join(f"{{:<{w}}}" for w in widths)
        body = [fmt.format(*header), fmt.format(*("-" * w for w in widths))]
        body += [fmt.format(*line) for line in lines]
        rate = self.total_rows / self.seconds if self.seconds else 0.0
        body.append(
            f"total: {self.total_rows} rows in {self.seconds:.1f} s"
            f" ({rate:.0f} rows/s) -> {self.out}"
        )
        return "\n".join(body)


def convert(cfg: ConvertConfig) -> ConvertSummary:
    """Run the conversion on Ray and write Parquet shards under cfg.out."""

    cfg = cfg.resolved()
    out = Path(cfg.out).resolve()
    names = [get_corpus(ref).name for ref in cfg.corpora]
    if cfg.overwrite:  # replace only the slices written now; others stay (append mode)
        for corpus in names:
            for split in cfg.splits:
                for fmt in cfg.formats:
                    shutil.rmtree(shard_path(out, corpus, split, fmt), ignore_errors=True)
    start = time.perf_counter()
    ds = build_dataset(cfg).materialize()
    ds.write_parquet(str(out), partition_cols=PARTITION_COLS)
    columns = PARTITION_COLS + ["n_entities"] + (["n_tokens"] if cfg.tokenizer else [])
    frame = ds.select_columns(columns).to_pandas()
    grouped = frame.groupby(PARTITION_COLS, sort=True)
    stats = grouped.agg(rows=("n_entities", "size"), entities=("n_entities", "sum"))
    if cfg.tokenizer:
        stats["tokens"] = grouped["n_tokens"].sum()
    seconds = time.perf_counter() - start
    rows = [
        {**dict(zip(PARTITION_COLS, key, strict=True)), **{k: int(v) for k, v in vals.items()}}
        for key, vals in stats.to_dict(orient="index").items()
    ]
    return ConvertSummary(rows, seconds, str(out))


def shard_path(root: str | Path, corpus: str, split: str, fmt: str) -> Path:
    """Folder of one (corpus, split, format) slice of a conversion."""
    return Path(root) / f"corpus={corpus}" / f"split={split}" / f"format={fmt}"


def shard_is_current(
    root: str | Path, corpus: str, split: str, fmt: str, types: Sequence[str] | None = None
) -> bool:
    """Whether a converted slice exists and its rows are what the code renders today.

    Prompts and writings change between versions; a slice converted before such a change
    would train a model on one prompt and evaluate it on another. Re-rendering the slice's
    first row and comparing its messages catches that at the cost of one Parquet row; so does
    a card whose `types` changed since (pass them when `corpus` is not a known name)."""
    import pyarrow.parquet as pq

    files = sorted(shard_path(root, corpus, split, fmt).glob("*.parquet"))
    if not files:
        return False
    table = pq.ParquetFile(files[0]).read_row_group(0).slice(0, 1)
    rows = table.to_pylist()
    if not rows:
        return False
    row = rows[0]
    fresh = next(render_rows(row_sentence(row), corpus, split, [fmt], types))
    stored = [{"role": m["role"], "content": m["content"]} for m in row["messages"]]
    return bool(stored == fresh["messages"])


def read_rows(root: str | Path, corpus: str, split: str, fmts: Sequence[str]):
    """Ray Dataset of converted rows for one corpus split and one or more formats."""
    import ray

    paths = []
    for fmt in fmts:
        path = shard_path(root, get_corpus(corpus).name, split, fmt)
        if not path.is_dir():
            raise FileNotFoundError(
                f"{path} not found: run `biogner convert` for {corpus}/{split}/{fmt}"
            )
        paths.append(str(path))
    return ray.data.read_parquet(
        paths,
        partitioning=ray.data.datasource.Partitioning(
            ray.data.datasource.PartitionStyle.HIVE, base_dir=str(root)
        ),
    )
