"""BioNER corpora: cards (built-in and a user's), one reader per annotation format, the
corpus check, the data directory and downloads."""

from biogner.corpora.card import CardError, CorpusCard, load_card
from biogner.corpora.download import DownloadError, download_corpus
from biogner.corpora.iob import IOBError, ReadStats, read_iob2, spans_to_tags
from biogner.corpora.load import CorpusRead, read_corpus
from biogner.corpora.problems import CorpusProblemError, Problem
from biogner.corpora.registry import (
    CORPORA,
    get_corpus,
    known_corpora,
    load_split,
    register_card,
    resolve_data_dir,
)
from biogner.corpora.status import corpora_status, format_corpora_table

__all__ = [
    "CORPORA",
    "CardError",
    "CorpusCard",
    "CorpusProblemError",
    "CorpusRead",
    "DownloadError",
    "IOBError",
    "Problem",
    "ReadStats",
    "corpora_status",
    "download_corpus",
    "format_corpora_table",
    "get_corpus",
    "known_corpora",
    "load_card",
    "load_split",
    "read_corpus",
    "read_iob2",
    "register_card",
    "resolve_data_dir",
    "spans_to_tags",
]
