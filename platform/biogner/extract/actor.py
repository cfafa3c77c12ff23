"""The extraction job's Ray Data actor: one `Annotator` per actor, document rows -> the same
rows with their entities (JSON) and their count of model inputs.

Why its own module: Ray imports it in every actor process; it holds the model path only, not
the job's reading, manifest or MLflow logging."""

from __future__ import annotations

import json
from typing import Any

from biogner.annotate.annotator import Annotator
from biogner.extract.config import ExtractConfig
from biogner.runtime import cpu_threads

KEPT_COLUMNS = ("block", "index", "id", "text", "title_length", "passages")


class DocumentActor:
    """Ray Data actor: holds one model; document rows -> rows with their entities."""

    def __init__(self, model_dir: str, fmt: str, types: list[str], cfg: dict[str, Any]) -> None:
        job = ExtractConfig.model_validate(cfg)
        gen = job.generation
        if gen.threads is None:
            gen = gen.model_copy(update={"threads": cpu_threads(job.num_actors)})
        self.annotator = Annotator.from_dir(
            model_dir, gen, fmt, job.window_tokens, job.window_chars
        )
        self.types, self.min_score = types, job.min_score

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        texts = [str(t) for t in batch["text"]]
        windows = self.annotator.windows(texts)
        results = self.annotator.annotate_windows(texts, windows, self.types, self.min_score)
        out = {k: list(batch[k]) for k in KEPT_COLUMNS}
        out["entities"] = [
            json.dumps([e.model_dump() for e in r.entities], ensure_ascii=False) for r in results
        ]
        out["sentences"] = [len(ws) for ws in windows]
        return out


__all__ = ["DocumentActor"]
