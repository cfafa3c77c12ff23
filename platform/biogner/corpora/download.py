"""Corpus downloads with checksums.

A download is all-or-nothing per split: bytes stream into a hidden temp file beside the
target, are checked (length, SHA-256, parses as IOB2; without a registered SHA-256, also that
it ends with the blank line closing its last sentence), synced to disk and only then renamed
into place, so a failed or interrupted download never leaves a file that a later run would
trust.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from biogner.corpora.card import CorpusCard
from biogner.corpora.iob import IOBError, ReadStats, read_iob2
from biogner.corpora.registry import SPLITS, get_corpus, resolve_data_dir

log = logging.getLogger(__name__)

MIRROR_ENV = "BIOGNER_DATA_MIRROR"
CHUNK_BYTES = 1 << 16
USER_AGENT = "biogner-corpus-download"
# Content-Length is ASCII digits (RFC 9110); int() would also take `٣`, `+3` or ` 3_0`.
_CONTENT_LENGTH = re.compile(r"[0-9]+")
# Bytes read from a file's end to see whether it ends with a blank line.
_TAIL_BYTES = 64
# One split at most this large (BC4CHEMD's train split, the largest, is ~25 MB), and fetched
# within this long: an endless or dripping body must not fill the disk or hang the command
# before its checksum can be compared.
MAX_SPLIT_BYTES = 1 << 30
SPLIT_DEADLINE_S = 1800.0


class DownloadError(RuntimeError):
    """A split could not be fetched or did not match its registered checksum."""

    def __init__(
        self, url: str, reason: str, expected: str | None = None, actual: str | None = None
    ) -> None:
        detail = f"{url}: {reason}"
        if expected is not None or actual is not None:
            detail += f" (expected sha256 {expected or 'unknown'}, got {actual or 'nothing'})"
        super().__init__(detail)
        self.url = url
        self.reason = reason
        self.expected = expected
        self.actual = actual


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks so large corpora need no memory."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def split_url(corpus: CorpusCard, split: str, base_url: str | None = None) -> str:
    """Where a split is fetched from: the mirror (same layout as a data dir) or upstream."""
    if base_url:
        folder = urllib.parse.quote(corpus.folder)
        return f"{base_url.rstrip('/')}/{folder}/{split}.tsv"
    return corpus.url(split)


def _progress(total: int | None, desc: str, enabled: bool) -> Any:
    """A tqdm byte counter on stderr, or None when tqdm is missing or progress is off."""
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm comes with transformers
        return None
    return tqdm(total=total, desc=desc, unit="B", unit_scale=True, file=sys.stderr, leave=False)


def _content_length(url: str, value: str | None) -> int | None:
    """The body size a server announces (None: not announced); a garbled header is a
    DownloadError, not a guess."""
    if value is None:
        return None
    if not _CONTENT_LENGTH.fullmatch(value.strip()):
        raise DownloadError(url, f"bad Content-Length header {value!r}")
    return int(value)


def _stream(
    url: str,
    out: IO[bytes],
    timeout: float,
    desc: str,
    progress: bool,
    max_bytes: int = MAX_SPLIT_BYTES,
    deadline_s: float = SPLIT_DEADLINE_S,
) -> tuple[str, int]:
    """Copy the body at `url` into `out`; return its SHA-256 and size. Raise DownloadError on
    any transport failure, a bad Content-Length, a body shorter than it announces, larger
    than `max_bytes` or not received within `deadline_s` (`timeout` bounds each read only)."""
    digest = hashlib.sha256()
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    deadline = time.monotonic() + deadline_s
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            expected_len = _content_length(url, resp.headers.get("Content-Length"))
            if expected_len is not None and expected_len > max_bytes:
                raise DownloadError(url, f"announces {expected_len} bytes; at most {max_bytes}")
            bar = _progress(expected_len, desc, progress)
            received = 0
            try:
                # read1: whatever has arrived, so that a dripping body meets the deadline
                for chunk in iter(lambda: resp.read1(CHUNK_BYTES), b""):
                    out.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    if bar is not None:
                        bar.update(len(chunk))
                    if received > max_bytes:
                        raise DownloadError(url, f"larger than {max_bytes} bytes: stopped")
                    if time.monotonic() > deadline:
                        raise DownloadError(
                            url, f"not received within {deadline_s:.0f} s ({received} bytes)"
                        )
            finally:
                if bar is not None:
                    bar.close()
    except urllib.error.HTTPError as exc:
        raise DownloadError(url, f"HTTP {exc.code} {exc.reason}") from exc
    except urllib.error.URLError as exc:
        raise DownloadError(url, f"cannot connect: {exc.reason}") from exc
    except (http.client.HTTPException, OSError) as exc:
        raise DownloadError(url, f"transfer failed: {exc!r}") from exc
    if expected_len is not None and received != expected_len:
        raise DownloadError(
            url,
            f"truncated response: {received} of {expected_len} bytes",
            actual=digest.hexdigest(),
        )
    if received == 0:
        raise DownloadError(url, "empty response")
    return digest.hexdigest(), received


def _validate_iob2(path: Path, url: str) -> ReadStats:
    """Fully parse a fetched file: an HTML error page or garbage must not become a corpus."""
    stats = ReadStats()
    try:
        for _ in read_iob2(path, stats=stats):
            pass
    except IOBError as exc:
        raise DownloadError(url, f"not an IOB2 file (line {exc.line}: {exc.reason})") from exc
    if stats.sentences == 0:
        raise DownloadError(url, "not an IOB2 file (no sentences)")
    return stats


def _check_complete(path: Path, url: str) -> None:
    """Without a checksum, the file must end as every registry corpus file does: with the
    blank line closing its last sentence. A body cut at a line boundary (a connection
    dropped with no Content-Length, a truncated mirror copy) parses as a smaller corpus."""
    with path.open("rb") as fh:
        fh.seek(max(path.stat().st_size - _TAIL_BYTES, 0))
        tail = fh.read()
    if tail[len(tail.rstrip()) :].count(b"\n") < 2:
        raise DownloadError(
            url, "incomplete IOB2 file: no blank line after its last sentence (truncated?)"
        )


def _make_dirs(folder: Path) -> list[Path]:
    """mkdir -p, returning the directories this call created (deepest last)."""
    created: list[Path] = []
    for parent in reversed([folder, *folder.parents]):
        if not parent.exists():
            parent.mkdir()
            created.append(parent)
    return created


def _remove_if_empty(created: list[Path]) -> None:
    for directory in reversed(created):
        try:
            directory.rmdir()
        except OSError:
            return  # not empty: something of value is in it


def _fetch_split(
    corpus: CorpusCard,
    split: str,
    target: Path,
    url: str,
    timeout: float,
    progress: bool,
    max_bytes: int = MAX_SPLIT_BYTES,
    deadline_s: float = SPLIT_DEADLINE_S,
) -> None:
    """Download one split into `target` atomically, or raise and leave nothing behind."""
    expected = corpus.sha256(split)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{split}.", suffix=".part", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            desc = f"{corpus.name}/{split}"
            actual, received = _stream(url, out, timeout, desc, progress, max_bytes, deadline_s)
            out.flush()
            os.fsync(out.fileno())  # the rename must not outlive the bytes in a crash
            written = os.fstat(out.fileno()).st_size
        if written != received:
            raise DownloadError(url, f"wrote {written} of {received} bytes received")
        if expected is not None and actual != expected:
            raise DownloadError(url, "checksum mismatch", expected=expected, actual=actual)
        stats = _validate_iob2(tmp, url)
        if expected is None:
            _check_complete(tmp, url)
            log.warning(
                "%s/%s downloaded WITHOUT verification (no registered checksum): sha256 %s",
                corpus.name,
                split,
                actual,
            )
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
        log.info("%s: %d sentences, sha256 %s", target, stats.sentences, actual)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def download_corpus(
    name: str,
    to: str | os.PathLike[str],
    splits: Sequence[str] = SPLITS,
    base_url: str | None = None,
    allow_unverified: bool = False,
    timeout: float = 60,
    progress: bool = True,
    max_bytes: int = MAX_SPLIT_BYTES,
    deadline_s: float = SPLIT_DEADLINE_S,
) -> list[Path]:
    """Fetch a corpus' splits into `<to>/<folder>/<split>.tsv`; return their paths.

    Sources are the canonical upstream URLs, or `{base_url}/{folder}/{split}.tsv` when a
    mirror is given (argument, else $BIOGNER_DATA_MIRROR). Files already present with the
    registered checksum are kept. Corpora without a registered checksum are refused unless
    `allow_unverified`, because nothing could then tell a changed upstream file from ours.
    """
    corpus = get_corpus(name)
    unknown = [s for s in splits if s not in SPLITS]
    if unknown:
        raise KeyError(f"unknown split(s) {unknown}; known: {', '.join(SPLITS)}")
    unverified = [s for s in splits if corpus.sha256(s) is None]
    if unverified and not allow_unverified:
        raise DownloadError(
            corpus.url(unverified[0]),
            f"{corpus.name} has no registered checksum for {', '.join(unverified)}; "
            "pass allow_unverified=True (--allow-unverified) to download it anyway",
        )
    mirror = base_url if base_url is not None else os.environ.get(MIRROR_ENV) or None
    folder = Path(to).expanduser() / corpus.folder
    paths: list[Path] = []
    for split in splits:
        target = folder / f"{split}.tsv"
        paths.append(target)
        expected = corpus.sha256(split)
        if target.is_file():
            if expected is None:
                log.info("%s present (no checksum to verify): kept", target)
                continue
            if sha256_file(target) == expected:
                log.info("%s present with the registered checksum: skipped", target)
                continue
            log.warning("%s differs from the registered checksum: downloading again", target)
        created = _make_dirs(folder)
        try:
            _fetch_split(
                corpus,
                split,
                target,
                split_url(corpus, split, mirror),
                timeout,
                progress,
                max_bytes,
                deadline_s,
            )
        except BaseException:
            _remove_if_empty(created)
            raise
    return paths


def ensure_corpus(
    name: str, data_dir: str | os.PathLike[str] | None = None, base_url: str | None = None
) -> tuple[Path, bool]:
    """(the data folder holding every split of `name`, whether they were fetched now): the
    files already in the data folder (`resolve_data_dir`), else downloaded there, verified,
    from the canonical source or a mirror (`base_url`, else $BIOGNER_DATA_MIRROR).
    DownloadError when they cannot be fetched (offline): its message says what to run."""
    corpus = get_corpus(name)
    folder = resolve_data_dir(data_dir)
    if all((folder / corpus.folder / f"{split}.tsv").is_file() for split in SPLITS):
        return folder, False
    try:
        download_corpus(corpus.name, folder, base_url=base_url, progress=False)
    except DownloadError as exc:
        raise DownloadError(
            exc.url,
            f"{exc.reason}. {corpus.name} is not in {folder} and could not be fetched: put its "
            f"files there, or run `biogner data download {corpus.name} --to DIR [--mirror URL]` "
            f"and pass --data-dir DIR (or set {MIRROR_ENV} to a mirror)",
        ) from None
    return folder, True
