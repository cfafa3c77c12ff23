"""What a training run learned from: each corpus checked before Ray starts, then its card and
the digest of the sentences it trained on logged to the MLflow run (`log_input`).

Why: a registered model must say what it learned from, and a user's corpus changes under the
same name; the digest tells two runs on "the same" corpus apart.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mlflow.entities import Dataset, DatasetInput, InputTag

from biogner.corpora import get_corpus
from biogner.corpora.card import CorpusCard, card_yaml
from biogner.corpora.load import CorpusRead
from biogner.formats.coverage import require_clean
from biogner.tracking.runs import client_for
from biogner.train.config import TrainConfig
from biogner.types import Sentence

CARDS_ARTIFACT_DIR = "corpora"


def sentences_digest(sentences: Sequence[Sentence]) -> str:
    """SHA-256 (first 16 hex digits) of the sentences' text and spans, in order."""
    digest = hashlib.sha256()
    for s in sentences:
        spans = [[sp.start, sp.end, sp.label] for sp in s.spans]
        digest.update(json.dumps([s.text, spans], ensure_ascii=False).encode())
        digest.update(b"\n")
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class CorpusInput:
    """What a run logs of one corpus: its card and its training split's digest and counts
    (the driver keeps these, not the corpus, for the hours the training lasts)."""

    card: CorpusCard
    digest: str
    profile: dict[str, Any]


def corpus_input(read: CorpusRead, split: str) -> CorpusInput:
    part = read.splits.get(split)
    sentences = part.sentences if part is not None else []
    profile = {
        "split": split,
        "documents": len(part.documents) if part is not None else 0,
        "sentences": len(sentences),
        "mentions": sum(len(s.spans) for s in sentences),
        "entity_types": list(read.types),
    }
    return CorpusInput(read.card, sentences_digest(sentences), profile)


def check_corpora(cfg: TrainConfig) -> list[CorpusInput]:
    """`corpora check` on every corpus of the run (CorpusProblemError refuses it); what the
    run will log of each."""
    d = cfg.data
    reads = (require_clean(get_corpus(ref), d.data_dir, formats=d.formats) for ref in d.corpora)
    return [corpus_input(read, d.split) for read in reads]


def log_corpora(cfg: TrainConfig, run_id: str, inputs: Sequence[CorpusInput]) -> None:
    """Each corpus's card as an artifact and its training split as a run input."""
    client = client_for(cfg.tracking)
    datasets = []
    for item in inputs:
        card = item.card
        client.log_text(run_id, card_yaml(card), f"{CARDS_ARTIFACT_DIR}/{card.name}.yaml")
        dataset = Dataset(
            name=card.name,
            digest=item.digest,
            source_type="biogner-corpus-card",
            source=json.dumps({"card": card.ref, "format": card.format}),
            profile=json.dumps(item.profile),
        )
        datasets.append(DatasetInput(dataset, tags=[InputTag("mlflow.data.context", "train")]))
    client.log_inputs(run_id, datasets=datasets)
