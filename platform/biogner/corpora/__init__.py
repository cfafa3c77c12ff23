"""BioNER corpora: registry, IOB2 reader, data directory and downloads."""

from biogner.corpora.download import (
    DownloadError,
    corpora_status,
    download_corpus,
    format_corpora_table,
)
from biogner.corpora.iob import IOBError, ReadStats, read_iob2, spans_to_tags
from biogner.corpora.registry import (
    CORPORA,
    Corpus,
    corpus_path,
    get_corpus,
    load_split,
    resolve_data_dir,
)

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
