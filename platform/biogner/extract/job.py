"""The extraction job: documents -> the shared `annotate.Annotator` in a Ray Data actor pool
(`actor.DocumentActor`) -> entities with offsets into each document, written per block.

A job users can trust with a day of work: documents are cut into blocks in input order; each
finished block is written whole (`writers.write_block`) and then recorded in the manifest, so
a rerun into the same output skips finished blocks and a killed job, rerun, writes every
document exactly once. A bad document goes to `errors.jsonl` with its id, source and reason,
and the job goes on. One MLflow run per job: the model version, the inputs' digest, counts
and throughput.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray

from biogner.annotate.annotator import select_types
from biogner.extract.actor import DocumentActor
from biogner.extract.config import ExtractConfig
from biogner.extract.documents import FORMATS_BY_SUFFIX, BadDocument, Document, read_documents
from biogner.extract.writers import block_file, write_block
from biogner.progress import Progress
from biogner.runtime import compute_runtime_env, init_ray
from biogner.tracking.open import open_model
from biogner.tracking.runs import client_for, tracked_run
from biogner.tracking.tags import EXTRACT_KIND, INPUTS_DIGEST_TAG, KIND_TAG, MODEL_URI_TAG

MANIFEST = "manifest.json"
ERRORS = "errors.jsonl"


@dataclass
class ExtractSummary:
    output: Path
    documents: int  # read and well-formed
    bad_documents: int
    blocks: int
    blocks_done_before: int  # skipped: finished by an earlier run
    blocks_written: int
    sentences: int  # model inputs of the blocks written now
    entities: int
    seconds: float
    run_id: str | None = None
    files: list[Path] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.blocks_done_before + self.blocks_written == self.blocks


def input_files(inputs: Sequence[str], input_format: str) -> list[Path]:
    """The files to read, in a stable order: files as given, folders' files sorted (those
    with a known suffix unless the format is given). A missing path fails before any work."""
    files: list[Path] = []
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
            if input_format == "auto":
                found = [p for p in found if p.suffix.lower() in FORMATS_BY_SUFFIX]
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"input {path} not found")
    if not files:
        raise FileNotFoundError(f"no input files in {list(inputs)}")
    return files


def inputs_digest(docs: Sequence[Document]) -> str:
    """What the blocks are made of: the same documents in the same order give the same
    digest, so a rerun only skips blocks of the very same input."""
    digest = hashlib.sha256()
    for doc in docs:
        digest.update(f"{doc.id}\x00{len(doc.text)}\x00".encode())
        digest.update(hashlib.sha256(doc.text.encode()).digest())
    return digest.hexdigest()


def _load_manifest(path: Path, key: dict[str, Any]) -> dict[str, Any]:
    """The manifest of an earlier run into this output, or a new one; an output made from
    other inputs, another model or another output format is refused (not mixed)."""
    if not path.is_file():
        return {**key, "blocks": {}}
    manifest = dict(json.loads(path.read_text()))
    for name, value in key.items():
        if manifest.get(name) != value:
            raise ValueError(
                f"{path.parent} holds the output of another job ({name}: "
                f"{manifest.get(name)!r}, now {value!r}): use another --output"
            )
    return manifest


def _save_manifest(path: Path, manifest: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True))
    os.replace(tmp, path)


def _write_errors(path: Path, bad: Sequence[BadDocument]) -> None:
    with path.open("w", encoding="utf-8") as fh:
        for b in bad:
            fh.write(json.dumps({"id": b.id, "source": b.source, "reason": b.reason}) + "\n")


def log_documents_input(
    client: Any, run_id: str, files: Sequence[Path], digest: str, documents: int, fmt: str
) -> None:
    """The documents as the run's input dataset (`mlflow.log_input`'s record): the MLflow UI
    shows what a job read, and two runs over the same input share its digest."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    source = json.dumps({"uris": [str(f.resolve()) for f in files]})
    profile = json.dumps({"documents": documents, "input_format": fmt})
    dataset = Dataset(
        name=files[0].name if len(files) == 1 else f"{files[0].name} (+{len(files) - 1} more)",
        digest=digest[:36],
        source_type="local",
        source=source,
        profile=profile,
    )
    client.log_inputs(
        run_id, datasets=[DatasetInput(dataset, [InputTag("mlflow.data.context", "extract")])]
    )


def run_extract(cfg: ExtractConfig) -> ExtractSummary:
    """Run the job (see the module docstring); returns what it did."""
    start = time.perf_counter()
    files = input_files(cfg.inputs, cfg.input_format)
    model = open_model(cfg.model, cfg.tracking)
    types = select_types(model.card.entity_types, cfg.entity_types)  # before any work
    docs, bad = _read_inputs(files, cfg)
    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    _write_errors(out / ERRORS, bad)
    key = {
        "inputs_digest": inputs_digest(docs),
        "model": model.pinned,
        "format": model.card.format,
        "entity_types": types,
        "output_format": cfg.output_format,
        "docs_per_block": cfg.docs_per_block,
    }
    blocks = Blocks(out, _load_manifest(out / MANIFEST, key), docs, cfg)
    summary = ExtractSummary(
        out, len(docs), len(bad), len(blocks.docs), len(blocks.done), 0, 0, 0, 0.0
    )
    tags = {
        KIND_TAG: EXTRACT_KIND,
        MODEL_URI_TAG: model.pinned,
        INPUTS_DIGEST_TAG: key["inputs_digest"],
    }
    params = cfg.model_dump(mode="json")
    with tracked_run(cfg.tracking, f"extract-{out.name}", tags=tags, params=params) as run_id:
        summary.run_id = run_id
        client = client_for(cfg.tracking)
        if files:
            digest = str(key["inputs_digest"])
            log_documents_input(client, run_id, files, digest, len(docs), cfg.input_format)
        if blocks.todo:
            init_ray()
            rows = _mapped_rows(
                blocks, DocumentActor, (str(model.dir), model.card.format, types, params), cfg
            )
            blocks.write_all(rows, summary)
        blocks.save()
        summary.seconds = time.perf_counter() - start
        _log_summary(client, run_id, summary, sum(len(blocks.docs[b]) for b in blocks.todo))
        client.log_artifact(run_id, str(blocks.manifest_path))
        client.log_artifact(run_id, str(out / ERRORS))
    return summary


def _read_inputs(
    files: Sequence[Path], cfg: ExtractConfig
) -> tuple[list[Document], list[BadDocument]]:
    """Every document of the input files in order, and those that could not be read."""
    docs: list[Document] = []
    bad: list[BadDocument] = []
    for path in files:
        for item in read_documents(path, cfg.input_format, cfg.max_doc_chars):
            if isinstance(item, Document):
                docs.append(item)
            else:
                bad.append(item)
    return docs, bad


class Blocks:
    """The documents cut into blocks, which of them earlier runs finished (the manifest), and
    writing each block whole as soon as all its rows are back."""

    def __init__(
        self, out: Path, manifest: dict[str, Any], docs: Sequence[Document], cfg: ExtractConfig
    ) -> None:
        n = cfg.docs_per_block
        self.out, self.manifest, self.output_format = out, manifest, cfg.output_format
        self.manifest_path = out / MANIFEST
        self.docs = [list(docs[i : i + n]) for i in range(0, len(docs), n)]
        self.done = [b for b in range(len(self.docs)) if str(b) in manifest["blocks"]]
        todo = [b for b in range(len(self.docs)) if str(b) not in manifest["blocks"]]
        self.todo = todo if cfg.stop_after_blocks is None else todo[: cfg.stop_after_blocks]

    def items(self) -> list[dict[str, Any]]:
        """The documents of the blocks to do, as the actors' input rows."""
        return [
            {
                "block": b,
                "index": j,
                "id": d.id,
                "text": d.text,
                "title_length": -1 if d.title_length is None else d.title_length,
                "passages": json.dumps(d.passages),
            }
            for b in self.todo
            for j, d in enumerate(self.docs[b])
        ]

    def write_all(self, rows: Iterable[dict[str, Any]], summary: ExtractSummary) -> None:
        """Write each block once all its rows are back (they come in any order)."""
        n_docs = sum(len(self.docs[b]) for b in self.todo)
        progress = Progress(f"extract {self.out.name}", n_docs, "documents", also="sentences")
        pending: dict[int, list[dict[str, Any]]] = {}
        for row in rows:
            b = int(row["block"])
            pending.setdefault(b, []).append(row)
            progress.update(also=int(row["sentences"]))
            if len(pending[b]) == len(self.docs[b]):
                self._write(b, sorted(pending.pop(b), key=lambda r: int(r["index"])), summary)

    def _write(self, b: int, rows: list[dict[str, Any]], summary: ExtractSummary) -> None:
        written = [_output_row(r) for r in rows]
        path = block_file(self.out, b, self.output_format)
        write_block(path, written, self.output_format)
        self.manifest["blocks"][str(b)] = {"file": path.name, "documents": len(rows)}
        self.save()
        summary.blocks_written += 1
        summary.files.append(path)
        summary.sentences += sum(int(r["sentences"]) for r in rows)
        summary.entities += sum(len(w["entities"]) for w in written)

    def save(self) -> None:
        _save_manifest(self.manifest_path, self.manifest)


def _mapped_rows(
    blocks: Blocks, actor: type, actor_args: tuple[Any, ...], cfg: ExtractConfig
) -> Iterable[dict[str, Any]]:
    """The documents to do through a pool of `actor`s (Ray Data), rows in any order."""
    items = blocks.items()
    ds = ray.data.from_items(items, override_num_blocks=max(1, len(items) // 32))
    mapped = ds.map_batches(
        actor,
        fn_constructor_args=actor_args,
        batch_size=32,
        compute=ray.data.ActorPoolStrategy(size=max(1, min(cfg.num_actors, len(items)))),
        num_gpus=1 if cfg.use_gpu else 0,
        runtime_env=compute_runtime_env(),
    )
    return mapped.iter_rows()


def _log_summary(client: Any, run_id: str, summary: ExtractSummary, docs_now: int) -> None:
    seconds = summary.seconds
    metrics = {
        "documents": float(summary.documents),
        "bad_documents": float(summary.bad_documents),
        "blocks_written": float(summary.blocks_written),
        "blocks_skipped": float(summary.blocks_done_before),
        "sentences": float(summary.sentences),
        "entities": float(summary.entities),
        "documents_per_s": docs_now / seconds if seconds else 0.0,
        "sentences_per_s": summary.sentences / seconds if seconds else 0.0,
    }
    for name, value in metrics.items():
        client.log_metric(run_id, name, value)


def _output_row(row: dict[str, Any]) -> dict[str, Any]:
    title = int(row["title_length"])
    return {
        "id": str(row["id"]),
        "text": str(row["text"]),
        "entities": json.loads(str(row["entities"])),
        "title_length": None if title < 0 else title,
        "passages": [tuple(p) for p in json.loads(str(row["passages"]))],
    }
