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

import ray

from biogner.corpora import get_corpus, load_split
from biogner.data import row_sentence, sentence_row
from biogner.evaluate.calibration import Calibration, calibrate, calibration_figure
from biogner.evaluate.config import FREE_DECODING, EvalConfig
from biogner.evaluate.metrics import Scorer, Scores
from biogner.formats.base import ParseResult
from biogner.generation import Generator
from biogner.models.card import ModelCard
from biogner.models.config import GenerationConfig
from biogner.progress import Progress
from biogner.runtime import compute_runtime_env, cpu_threads, init_ray, jemalloc_loaded
from biogner.tracking.config import TrackingConfig
from biogner.tracking.open import open_model, pin
from biogner.tracking.registry import logged_model_id
from biogner.tracking.runs import client_for, setup, tracked_run
from biogner.tracking.tags import (
    CORPUS_TAG,
    DECODING_TAG,
    EVALUATE_KIND,
    FORMAT_TAG,
    KIND_TAG,
    MODEL_TAG,
    MODEL_URI_TAG,
    SENTENCES_TAG,
    SPLIT_TAG,
    SUBSET_TAG,
)
from biogner.types import Sentence, Span


@dataclass
class EvalResult:
    corpus: str
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
        cfg = GenerationConfig.model_validate(gen)
        if cfg.threads is None:  # the node's cores shared by the actors, not Ray's OMP=1
            cfg = cfg.model_copy(update={"threads": cpu_threads(actors)})
        self.generator = Generator(model_dir, cfg)
        self.fmt = fmt
        self.types = types

    def __call__(self, batch: dict[str, Any]) -> dict[str, list]:
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
                "overruled",
                "dropped",
                "generated_tokens",
                "truncated",
                "seconds",
                "worker_niceness",
                "worker_jemalloc",
            )
        }
        for g in gens:
            out["sentence_id"].append(g.sentence.id)
            out["answers"].append(g.answers)
            out["pred_spans"].append(
                [
                    {
                        "start": s.start,
                        "end": s.end,
                        "label": s.label,
                        "score": g.parse.scores.get(s, -1.0),  # -1: not scored
                    }
                    for s in g.parse.spans
                ]
            )
            out["problems"].append(g.parse.problems)
            out["predicted_mentions"].append(g.parse.predicted_mentions)
            out["hallucinated"].append(g.parse.hallucinated)
            out["overruled"].append(g.parse.overruled)
            out["dropped"].append(g.parse.dropped)
            out["generated_tokens"].append(g.generated_tokens)
            out["truncated"].append(g.truncated)
            out["seconds"].append(seconds / max(len(gens), 1))
            out["worker_niceness"].append(os.nice(0))  # a starved actor shows up here
            out["worker_jemalloc"].append(jemalloc_loaded())
        return out


def _spans(items: Any) -> list[Span]:
    return [Span(int(s["start"]), int(s["end"]), str(s["label"])) for s in items]


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


def actor_plan(sentences: int, rows_per_task: int, num_actors: int) -> tuple[int, int, int]:
    """(rows per block, blocks, actors) for one evaluation. A split smaller than
    `num_actors * rows_per_task` is cut into smaller blocks so that every actor gets work,
    and no more actors start than there are blocks: an actor with nothing to do still loads
    the model (and Ray Data warned about it on the console)."""
    rows = max(1, min(rows_per_task, sentences // max(1, num_actors)))
    blocks = max(1, sentences // rows)
    return rows, blocks, max(1, min(num_actors, blocks))


def run_evaluation(cfg: EvalConfig) -> EvalResult:
    """Generate, parse and score one (model, format, corpus split); log a nested MLflow run."""
    init_ray()
    setup(cfg.tracking)  # runs:/ and models:/ URIs resolve against this store
    model = open_model(cfg.model, cfg.tracking)
    model_dir, card, model_run = model.dir, model.card, model.run_id
    # any format may be scored (the study reads a model in others too: `@<format>` rows)
    fmt = cfg.format or card.format
    corpus = get_corpus(cfg.corpus)
    types = list(corpus.types)
    sentences = load_split(corpus, cfg.split, cfg.data_dir, cfg.limit)
    gold = {s.id: s for s in sentences}
    items = [sentence_row(s, corpus.name, cfg.split, types) for s in sentences]
    rows, blocks, actors = actor_plan(len(items), cfg.rows_per_task, cfg.num_actors)
    ds = ray.data.from_items(items, override_num_blocks=blocks)
    start = time.perf_counter()
    mapped = ds.map_batches(
        ExtractActor,
        fn_constructor_args=(str(model_dir), fmt, types, cfg.generation.model_dump(), actors),
        batch_size=rows,
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_gpus=1 if cfg.use_gpu else 0,
        runtime_env=compute_runtime_env(),
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
            overruled=int(row["overruled"]),
            dropped=int(row["dropped"]),
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
            f"{prefix}worker_jemalloc": float(all(r["worker_jemalloc"] for r in preds)),
        }
    )
    calibration = split_calibration(preds, gold)
    if calibration is not None:
        metrics[f"{prefix}ece"] = calibration.ece
    parent = cfg.parent_run_id or model_run
    run_id = _log_evaluation(cfg, fmt, corpus.name, card, metrics, preds, gold, parent, calibration)
    if parent and cfg.log_to_parent and cfg.limit is None:
        model_corpora = list(card.corpora)
        client = client_for(cfg.tracking)
        # linked to the logged model too: the MLflow UI's model page shows its scores
        model_id = _logged_model(cfg.tracking, parent)
        on_parent = parent_metrics(metrics, corpus.name, model_corpora)
        if len(model_corpora) > 1:
            logged = {**client.get_run(parent).data.metrics, **on_parent}
            on_parent.update(macro_metrics(logged, prefix, model_corpora))
        for key, value in on_parent.items():
            client.log_metric(parent, key, value, model_id=model_id)
    return EvalResult(corpus.name, run_id, parent, scores, metrics, preds)


def _logged_model(tracking: TrackingConfig, run_id: str) -> str | None:
    """The id of the model `run_id` logged, None when it logged none (a bare run)."""
    try:
        return logged_model_id(tracking, run_id)
    except LookupError:
        return None


def parent_metrics(
    metrics: dict[str, float], corpus: str, model_corpora: list[str]
) -> dict[str, float]:
    """The names an evaluation's metrics take on the training run: as they are for a model
    trained on this one corpus (`test_f1`), prefixed by the corpus for a multi-corpus model
    (`BC5CDR/test_f1`), whose runs hold one score per corpus."""
    if model_corpora in ([], [corpus]):
        return dict(metrics)
    return {f"{corpus}/{key}": value for key, value in metrics.items()}


def macro_metrics(logged: dict[str, float], prefix: str, corpora: list[str]) -> dict[str, float]:
    """A multi-corpus model's own `<split>_f1`: the mean of its corpora's F1 (each corpus
    counts once, whatever its size), once every corpus it was trained on is scored on that
    split; what `select` ranks multi-corpus models by."""
    scores = [logged.get(f"{c}/{prefix}f1") for c in corpora]
    if any(v is None for v in scores):
        return {}
    values = [float(v) for v in scores if v is not None]
    return {f"{prefix}f1": sum(values) / len(values), f"{prefix}macro_corpora": float(len(values))}


def run_evaluations(cfg: EvalConfig, corpora: list[str]) -> list[EvalResult]:
    """One evaluation per corpus (`all`: the corpora the model was trained on), of one model:
    a registry alias is pinned to its version first, so an alias moved meanwhile cannot mix
    two models in one table."""
    setup(cfg.tracking)
    model = pin(cfg.model, cfg.tracking)[0]
    if corpora == ["all"]:
        card = open_model(model, cfg.tracking).card
        corpora = list(card.corpus_refs or card.corpora)
        if not corpora:
            raise ValueError(f"{cfg.model}: its metadata names no training corpora")
    for name in corpora:
        get_corpus(name)  # an unknown corpus fails before any work
    return [
        run_evaluation(cfg.model_copy(update={"model": model, "corpus": name})) for name in corpora
    ]


def _log_evaluation(
    cfg: EvalConfig,
    fmt: str,
    corpus: str,
    card: ModelCard,
    metrics: dict[str, float],
    preds: list[dict[str, Any]],
    gold: dict[str, Sentence],
    parent: str | None,
    calibration: Calibration | None = None,
) -> str:
    tags = {
        KIND_TAG: EVALUATE_KIND,
        MODEL_TAG: card.base_model,
        MODEL_URI_TAG: cfg.model,
        FORMAT_TAG: fmt,
        CORPUS_TAG: corpus,
        SPLIT_TAG: cfg.split,
        DECODING_TAG: "constrained" if cfg.generation.constrained else FREE_DECODING,
        SUBSET_TAG: "true" if cfg.limit is not None else "false",
        SENTENCES_TAG: str(len(gold)),
    }
    name = f"eval-{corpus}-{fmt}-{cfg.split}" + (f"-first{cfg.limit}" if cfg.limit else "")
    name += "" if cfg.generation.constrained else f"-{FREE_DECODING}"
    run_cfg = cfg.tracking
    if parent:  # a nested run lives in its parent's experiment, whatever the default says
        client = client_for(cfg.tracking)
        experiment_id = client.get_run(parent).info.experiment_id
        run_cfg = run_cfg.model_copy(
            update={"experiment": client.get_experiment(experiment_id).name}
        )
    with tracked_run(
        run_cfg, name, tags=tags, params=cfg.model_dump(mode="json"), parent_run_id=parent
    ) as run_id:
        client = client_for(cfg.tracking)
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
                        "pred_scores": [
                            None if s["score"] < 0 else round(s["score"], 6)
                            for s in row["pred_spans"]
                        ],
                        "answers": list(row["answers"]),
                        "problems": list(row["problems"]),
                    }
                    fh.write(json.dumps(record, ensure_ascii=False) + "\n")
            (Path(tmp) / "errors.md").write_text(error_analysis(preds, gold, cfg.error_sample))
            client.log_artifact(run_id, str(path))
            client.log_artifact(run_id, str(Path(tmp) / "errors.md"))
            if calibration is not None:
                _log_calibration(client, run_id, calibration, Path(tmp), f"{fmt} {corpus}")
    return run_id


def split_calibration(preds: list[dict[str, Any]], gold: dict[str, Sentence]) -> Calibration | None:
    """The calibration of the split's entity scores (None: the generation was not scored)."""
    pairs = []
    for row in preds:
        truth = set(gold[row["sentence_id"]].spans)
        for s in row["pred_spans"]:
            if s["score"] >= 0:
                span = Span(int(s["start"]), int(s["end"]), str(s["label"]))
                pairs.append((float(s["score"]), span in truth))
    if not pairs:
        return None
    return calibrate(pairs, sum(len(g.spans) for g in gold.values()))


def _log_calibration(
    client: Any, run_id: str, calibration: Calibration, folder: Path, title: str
) -> None:
    (folder / "calibration.json").write_text(json.dumps(calibration.as_dict(), indent=1))
    (folder / "calibration.md").write_text(calibration.markdown())
    calibration_figure(calibration, title).savefig(folder / "calibration.png", dpi=100)
    for name in ("calibration.json", "calibration.md", "calibration.png"):
        client.log_artifact(run_id, str(folder / name))
