"""Batch evaluation on Ray Data: an actor pool holds the model, generates, parses; the driver
scores strictly and records everything in a nested MLflow run.

The model may be an MLflow `runs:/` or `models:/` URI or a directory; its format and entity
types come from the metadata logged with it, so an evaluation asks exactly the question the
model was trained on.
"""

from __future__ import annotations

import json
import os
import random
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from biogner.evaluate.metrics import FREE_DECODING, Scorer, Scores, split_prefix
from biogner.formats.base import ParseResult
from biogner.generation import GenerationConfig
from biogner.progress import Progress
from biogner.tracking import SUBSET_TAG, TrackingConfig
from biogner.types import Sentence, Span


class EvalConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(..., description="runs:/<id>/model, models:/<name>@<alias>, or a dir")
    corpus: str = "NCBI-disease"
    format: str | None = Field(None, description="default: the format the model was trained on")
    split: str = "test"
    limit: int | None = Field(
        None,
        description="first N sentences only: a quick look, tagged as a subset, never copied "
        "onto the training run and never eligible for champion selection",
    )
    data_dir: str | None = None
    generation: GenerationConfig = Field(default_factory=GenerationConfig)
    num_actors: int = 1
    use_gpu: bool = False
    rows_per_task: int = 64
    error_sample: int = 25
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    parent_run_id: str | None = Field(
        None, description="default: the training run of a runs:/ or models:/ URI"
    )
    log_to_parent: bool = Field(
        True,
        description="also log <split>_f1 ... on the parent run (whole splits only; free "
        "decoding as <split>_free_f1 ...)",
    )

    @property
    def metric_prefix(self) -> str:
        """`test_`, or `test_free_` when decoding free (generation.constrained: false)."""
        return split_prefix(self.split, self.generation.constrained)


@dataclass
class EvalResult:
    run_id: str | None
    parent_run_id: str | None
    scores: Scores
    metrics: dict[str, float]
    predictions: list[dict[str, Any]]


class ExtractActor:
    """Ray Data actor: holds one Generator, turns sentence rows into prediction rows."""

    def __init__(
        self, model_dir: str, fmt: str, types: list[str], gen: dict[str, Any], actors: int
    ) -> None:
        from biogner.generation import Generator
        from biogner.runtime import cpu_threads

        cfg = GenerationConfig.model_validate(gen)
        if cfg.threads is None:  # the node's cores shared by the actors, not Ray's OMP=1
            cfg = cfg.model_copy(update={"threads": cpu_threads(actors)})
        self.generator = Generator(model_dir, cfg)
        self.fmt = fmt
        self.types = types

    def __call__(self, batch: dict[str, Any]) -> dict[str, list]:
        from biogner.data import row_sentence

        rows = [{k: batch[k][i] for k in batch} for i in range(len(batch["sentence_id"]))]
        sentences = [row_sentence(r) for r in rows]
        start = time.perf_counter()
        gens = self.generator.extract(sentences, self.fmt, self.types)
        seconds = time.perf_counter() - start
        out: dict[str, list] = {
            k: []
            for k in (
                "sentence_id",
                "answers",
                "pred_spans",
                "problems",
                "predicted_mentions",
                "hallucinated",
                "generated_tokens",
                "truncated",
                "seconds",
                "worker_niceness",
            )
        }
        for g in gens:
            out["sentence_id"].append(g.sentence.id)
            out["answers"].append(g.answers)
            out["pred_spans"].append(
                [{"start": s.start, "end": s.end, "label": s.label} for s in g.parse.spans]
            )
            out["problems"].append(g.parse.problems)
            out["predicted_mentions"].append(g.parse.predicted_mentions)
            out["hallucinated"].append(g.parse.hallucinated)
            out["generated_tokens"].append(g.generated_tokens)
            out["truncated"].append(g.truncated)
            out["seconds"].append(seconds / max(len(gens), 1))
            out["worker_niceness"].append(os.nice(0))  # a starved actor shows up here
        return out


def _spans(items: Any) -> list[Span]:
    return [Span(int(s["start"]), int(s["end"]), str(s["label"])) for s in items]


def resolve_model(model_uri: str) -> tuple[Path, dict[str, Any], str | None]:
    """Local model dir, its metadata, and the MLflow run that logged it (if any)."""
    from biogner import tracking
    from biogner.generation import read_model_metadata

    model_dir = tracking.download_model_dir(model_uri)
    meta = read_model_metadata(model_dir)
    run_id = None
    if model_uri.startswith("runs:/"):
        run_id = model_uri.split("/")[1]
    elif model_uri.startswith("models:/"):
        run_id = tracking.model_uri_run_id(model_uri)
    return model_dir, meta, run_id


def error_analysis(
    rows: list[dict[str, Any]], gold: dict[str, Sentence], n: int, seed: int = 0
) -> str:
    """A Markdown sample of false positives and negatives with their sentence around them."""
    fps: list[str] = []
    fns: list[str] = []
    for row in rows:
        sent = gold[row["sentence_id"]]
        pred, ref = set(_spans(row["pred_spans"])), set(sent.spans)
        for kind, spans, bucket in (("FP", pred - ref, fps), ("FN", ref - pred, fns)):
            for s in sorted(spans):
                left = sent.text[max(0, s.start - 40) : s.start]
                right = sent.text[s.end : s.end + 40]
                mention = sent.text[s.start : s.end]
                bucket.append(
                    f"- **{kind}** `{s.label}` ...{left}**[{mention}]**{right}... (`{sent.id}`)"
                )
    rng = random.Random(seed)
    lines = ["# Error analysis", "", f"{len(fps)} false positives, {len(fns)} false negatives.", ""]
    for title, bucket in (("False positives", fps), ("False negatives", fns)):
        lines += [f"## {title}", ""]
        lines += rng.sample(bucket, min(n, len(bucket))) if bucket else ["(none)"]
        lines.append("")
    return "\n".join(lines)


def run_evaluation(cfg: EvalConfig) -> EvalResult:
    """Generate, parse and score one (model, format, corpus split); log a nested MLflow run."""
    import ray

    from biogner import tracking
    from biogner.corpora import get_corpus, load_split
    from biogner.data import sentence_row
    from biogner.runtime import full_priority, init_ray

    init_ray()
    tracking.setup(cfg.tracking)  # runs:/ and models:/ URIs resolve against this store
    model_dir, meta, model_run = resolve_model(cfg.model)
    fmt = cfg.format or str(meta["format"])
    corpus = get_corpus(cfg.corpus)
    types = list(corpus.entity_types)
    sentences = load_split(corpus, cfg.split, cfg.data_dir, cfg.limit)
    gold = {s.id: s for s in sentences}
    items = [sentence_row(s, corpus.name, cfg.split) for s in sentences]
    ds = ray.data.from_items(items, override_num_blocks=max(1, len(items) // cfg.rows_per_task))
    start = time.perf_counter()
    mapped = ds.map_batches(
        ExtractActor,
        fn_constructor_args=(
            str(model_dir),
            fmt,
            types,
            cfg.generation.model_dump(),
            cfg.num_actors,
        ),
        batch_size=cfg.rows_per_task,
        compute=ray.data.ActorPoolStrategy(size=cfg.num_actors),
        num_gpus=1 if cfg.use_gpu else 0,
        runtime_env=full_priority(),
    )
    progress = Progress(f"evaluate {fmt} {corpus.name}/{cfg.split}", len(items), "sentences")
    preds = []
    for row in mapped.iter_rows():
        preds.append(row)
        progress.update()
    wall = time.perf_counter() - start
    preds.sort(key=lambda r: r["sentence_id"])

    scorer = Scorer()
    generated = 0
    for row in preds:
        parse = ParseResult(
            spans=_spans(row["pred_spans"]),
            problems=list(row["problems"]),
            predicted_mentions=int(row["predicted_mentions"]),
            hallucinated=int(row["hallucinated"]),
        )
        scorer.add(row["sentence_id"], gold[row["sentence_id"]].spans, parse.spans, parse)
        generated += int(row["generated_tokens"])
    scores = scorer.scores
    n_gold = sum(len(s.spans) for s in sentences)
    prefix = cfg.metric_prefix
    metrics = scores.as_metrics(prefix)
    metrics.update(
        {
            f"{prefix}generated_tokens_per_sentence": generated / max(len(sentences), 1),
            f"{prefix}generated_tokens_per_entity": generated / max(n_gold, 1),
            f"{prefix}sentences_per_s": len(sentences) / wall if wall else 0.0,
            f"{prefix}truncated_rate": sum(bool(r["truncated"]) for r in preds)
            / max(len(preds), 1),
            f"{prefix}wall_s": wall,
            f"{prefix}worker_niceness": max(int(r["worker_niceness"]) for r in preds),
        }
    )
    parent = cfg.parent_run_id or model_run
    run_id = _log_evaluation(cfg, fmt, corpus.name, meta, metrics, preds, gold, parent)
    if parent and cfg.log_to_parent and cfg.limit is None:
        client = tracking.client_for(cfg.tracking)
        for key, value in metrics.items():
            client.log_metric(parent, key, value)
    return EvalResult(run_id, parent, scores, metrics, preds)


def _log_evaluation(
    cfg: EvalConfig,
    fmt: str,
    corpus: str,
    meta: dict[str, Any],
    metrics: dict[str, float],
    preds: list[dict[str, Any]],
    gold: dict[str, Sentence],
    parent: str | None,
) -> str:
    from biogner import tracking

    tags = {
        "biogner.kind": "evaluate",
        "model": meta.get("base_model", ""),
        "model_uri": cfg.model,
        "format": fmt,
        "corpus": corpus,
        "split": cfg.split,
        "decoding": "constrained" if cfg.generation.constrained else FREE_DECODING,
        SUBSET_TAG: "true" if cfg.limit is not None else "false",
        "sentences": str(len(gold)),
    }
    name = f"eval-{corpus}-{fmt}-{cfg.split}" + (f"-first{cfg.limit}" if cfg.limit else "")
    name += "" if cfg.generation.constrained else f"-{FREE_DECODING}"
    run_cfg = cfg.tracking
    if parent:  # a nested run lives in its parent's experiment, whatever the default says
        client = tracking.client_for(cfg.tracking)
        experiment_id = client.get_run(parent).info.experiment_id
        run_cfg = run_cfg.model_copy(
            update={"experiment": client.get_experiment(experiment_id).name}
        )
    with tracking.tracked_run(
        run_cfg, name, tags=tags, params=cfg.model_dump(mode="json"), parent_run_id=parent
    ) as run_id:
        client = tracking.client_for(cfg.tracking)
        for key, value in metrics.items():
            client.log_metric(run_id, key, value)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "predictions.jsonl"
            with path.open("w") as fh:
                for row in preds:
                    sent = gold[row["sentence_id"]]
                    record = {
                        "id": sent.id,
                        "text": sent.text,
                        "gold": [[s.start, s.end, s.label] for s in sent.spans],
                        "pred": [[s["start"], s["end"], s["label"]] for s in row["pred_spans"]],
                        "answers": list(row["answers"]),
                        "problems": list(row["problems"]),
                    }
                    fh.write(json.dumps(record, ensure_ascii=False) + "\n")
            (Path(tmp) / "errors.md").write_text(error_analysis(preds, gold, cfg.error_sample))
            client.log_artifact(run_id, str(path))
            client.log_artifact(run_id, str(Path(tmp) / "errors.md"))
    return run_id
