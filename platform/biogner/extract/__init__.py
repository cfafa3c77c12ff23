"""Batch extraction over documents (`biogner extract`, `jobs/extract.py`): `documents` (readers
of JSONL, plain text and PubTator into one document shape), `writers` (JSONL, Parquet,
PubTator), `config` (`ExtractConfig`), `job` (the Ray Data job, its blocks and manifest)."""
