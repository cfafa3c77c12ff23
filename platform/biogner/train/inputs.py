"""What a training run learned from: each corpus checked before Ray starts, then its card and
the digest of the sentences it trained on logged to the MLflow run (`log_input`).

Why: a registered model must say what it learned from, and a user's corpus changes under the
same name; the digest tells two runs on "the same" corpus apart.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

from biogner.corpora import get_corpus
from biogner.corpora.card import card_yaml
from biogner.corpora.check import require_clean
from biogner.corpora.load import CorpusRead
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


def check_corpora(cfg: TrainConfig) -> list[CorpusRead]:
    """`corpora check` on every corpus of the run; CorpusProblemError refuses it."""
    formats = cfg.data.formats
    return [
        require_clean(get_corpus(ref), cfg.data.data_dir, formats=formats)
        for ref in cfg.data.corpora
    ]


def log_corpora(cfg: TrainConfig, run_id: str, reads: Sequence[CorpusRead]) -> None:
    """Each corpus's card as an artifact and its training split as a run input."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    from biogner.tracking.runs import client_for

    client = client_for(cfg.tracking)
    inputs = []
    split = cfg.data.split
    for read in reads:
        card = read.card
        sentences = read.splits[split].sentences if split in read.splits else []
        client.log_text(run_id, card_yaml(card), f"{CARDS_ARTIFACT_DIR}/{card.name}.yaml")
        profile = {
            "split": split,
            "documents": len(read.splits[split].documents) if split in read.splits else 0,
            "sentences": len(sentences),
            "mentions": sum(len(s.spans) for s in sentences),
            "entity_types": list(read.types),
        }
        dataset = Dataset(
            name=card.name,
            digest=sentences_digest(sentences),
            source_type="biogner-corpus-card",
            source=json.dumps({"card": card.ref, "format": card.format}),
            profile=json.dumps(profile),
        )
        inputs.append(DatasetInput(dataset, tags=[InputTag("mlflow.data.context", "train")]))
    client.log_inputs(run_id, datasets=inputs)
