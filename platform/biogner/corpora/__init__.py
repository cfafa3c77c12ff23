"""BioNER corpora: registry, IOB2 reader, data directory and downloads."""

from biogner.corpora.download import DownloadError, download_corpus
from biogner.corpora.iob import IOBError, ReadStats, read_iob2, spans_to_tags
from biogner.corpora.registry import (
    CORPORA,
    Corpus,
    corpus_path,
    get_corpus,
    load_split,
    resolve_data_dir,
)
from biogner.corpora.status import corpora_status, format_corpora_table

__all__ = [
    "CORPORA",
    "Corpus",
    "DownloadError",
    "corpora_status",
    "download_corpus",
    "format_corpora_table",
    "IOBError",
    "ReadStats",
    "corpus_path",
    "get_corpus",
    "load_split",
    "read_iob2",
    "resolve_data_dir",
    "spans_to_tags",
]
