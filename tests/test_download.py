"""Corpus downloads through a real HTTP server on 127.0.0.1, and the status table."""

from __future__ import annotations

import functools
import logging
import os
import shutil
import threading
import time
import urllib.parse
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import corpora_dir
from support import free_port

from biogner.corpora import get_corpus, load_split, read_iob2
from biogner.corpora.download import (
    MIRROR_ENV,
    DownloadError,
    download_corpus,
    sha256_file,
    split_url,
)
from biogner.corpora.registry import SPLITS
from biogner.corpora.status import corpora_status, count_sentences, format_corpora_table

SMALL_IOB2 = b"Aspirin\tB-Chemical\nworks\tO\n\nNo\tO\n\n"


@pytest.fixture(scope="module")
def shared_ncbi() -> Path:
    return corpora_dir("NCBI-disease") / "NCBI-disease"


class _Handler(SimpleHTTPRequestHandler):
    """Static files, except for these views of the /good/ files:
    /truncated/<path>: the body cut to half of what its Content-Length announces (a
    connection dropped mid-transfer);
    /linecut/<path>: the body cut after the line that ends past its middle, and no
    Content-Length (a connection dropped at a line boundary: the end of the body is the
    end of the connection);
    /length/<value>/<path>: the whole body, announced with Content-Length <value> (URL-quoted).
    """

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        view, _, rest = self.path[1:].partition("/")
        if view in ("endless", "drip"):
            self._forever(view)
            return
        if view not in ("truncated", "linecut", "length"):
            super().do_GET()
            return
        length = None
        if view == "length":
            value, _, rest = rest.partition("/")
            length = urllib.parse.unquote(value)
        body = Path(self.translate_path(f"/good/{rest}")).read_bytes()
        if view == "truncated":
            length, body = str(len(body)), body[: len(body) // 2]
        elif view == "linecut":
            body = body[: body.index(b"\n", len(body) // 2) + 1]
        self.send_response(200)
        self.send_header("Content-Type", "text/tab-separated-values")
        if length is not None:
            self.send_header("Content-Length", length)
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()
        self.close_connection = True

    def _forever(self, view: str) -> None:
        """/endless/: IOB2 lines without end and no Content-Length; /drip/: a byte at a time,
        never finishing (each read gets something: no read timeout fires)."""
        self.send_response(200)
        self.send_header("Content-Type", "text/tab-separated-values")
        self.end_headers()
        line = b"Cancer\tB-Disease\n"
        try:
            while True:
                if view == "endless":
                    self.wfile.write(line * 4096)
                else:
                    self.wfile.write(b"O")
                    self.wfile.flush()
                    time.sleep(0.02)
        except OSError:  # the client gave up
            self.close_connection = True

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def mirror(tmp_path_factory: pytest.TempPathFactory, shared_ncbi: Path) -> Iterator[str]:
    """http://127.0.0.1:PORT with /good (exact copies), /corrupt (one byte changed in
    train.tsv), /truncated (cut bodies) and /html (an error page) corpus layouts."""
    root = tmp_path_factory.mktemp("mirror")
    good = root / "good" / "NCBI-disease"
    good.mkdir(parents=True)
    for split in SPLITS:
        shutil.copyfile(shared_ncbi / f"{split}.tsv", good / f"{split}.tsv")
    (good.parent / "BC4CHEMD").mkdir()
    for split in SPLITS:
        (good.parent / "BC4CHEMD" / f"{split}.tsv").write_bytes(SMALL_IOB2)
    corrupt = root / "corrupt" / "NCBI-disease"
    shutil.copytree(good, corrupt)
    data = bytearray((corrupt / "train.tsv").read_bytes())
    data[1000] = ord("X") if data[1000] != ord("X") else ord("Y")
    (corrupt / "train.tsv").write_bytes(bytes(data))
    html = root / "html" / "BC4CHEMD"
    html.mkdir(parents=True)
    (html / "train.tsv").write_text("<!DOCTYPE html>\n<html><body>Not Found</body></html>\n")

    handler = functools.partial(_Handler, directory=str(root))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _leftovers(path: Path) -> list[Path]:
    return sorted(path.rglob("*")) if path.exists() else []


def test_download_from_mirror_matches_originals(
    mirror: str, shared_ncbi: Path, tmp_path: Path
) -> None:
    paths = download_corpus("ncbi-disease", tmp_path / "data", base_url=f"{mirror}/good/")
    assert paths == [tmp_path / "data" / "NCBI-disease" / f"{s}.tsv" for s in SPLITS]
    for split, path in zip(SPLITS, paths, strict=True):
        assert path.read_bytes() == (shared_ncbi / f"{split}.tsv").read_bytes()
    # no temp files remain beside the corpus
    assert sorted(p.name for p in paths[0].parent.iterdir()) == ["dev.tsv", "test.tsv", "train.tsv"]
    assert len(load_split("NCBI-disease", "dev", data_dir=tmp_path / "data")) == 923


def test_present_files_with_right_checksum_are_not_fetched_again(
    mirror: str, tmp_path: Path
) -> None:
    download_corpus("NCBI-disease", tmp_path, splits=["dev"], base_url=f"{mirror}/good")
    target = tmp_path / "NCBI-disease" / "dev.tsv"
    before = target.stat().st_mtime_ns
    # a mirror without the file would fail if it were asked for it
    download_corpus("NCBI-disease", tmp_path, splits=["dev"], base_url=f"{mirror}/absent")
    assert target.stat().st_mtime_ns == before


def test_present_file_with_wrong_checksum_is_replaced(mirror: str, tmp_path: Path) -> None:
    target = tmp_path / "NCBI-disease" / "test.tsv"
    target.parent.mkdir()
    target.write_bytes(SMALL_IOB2)
    download_corpus("NCBI-disease", tmp_path, splits=["test"], base_url=f"{mirror}/good")
    assert sha256_file(target) == get_corpus("NCBI-disease").sha256("test")


def test_mirror_taken_from_environment(
    mirror: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(MIRROR_ENV, f"{mirror}/good")
    (path,) = download_corpus("NCBI-disease", tmp_path, splits=["dev"], progress=False)
    assert sha256_file(path) == get_corpus("NCBI-disease").sha256("dev")


def test_corrupted_file_rejected_and_nothing_left(mirror: str, tmp_path: Path) -> None:
    dest = tmp_path / "data"
    with pytest.raises(DownloadError) as info:
        download_corpus("NCBI-disease", dest, splits=["train"], base_url=f"{mirror}/corrupt")
    err = info.value
    assert err.url == f"{mirror}/corrupt/NCBI-disease/train.tsv"
    expected = get_corpus("NCBI-disease").sha256("train")
    assert expected is not None and err.expected == expected
    assert err.actual is not None and err.actual != expected
    assert err.url in str(err) and expected in str(err) and err.actual in str(err)
    assert not dest.exists()  # created by the call, empty after the failure: removed


def test_failure_keeps_folders_that_hold_other_files(mirror: str, tmp_path: Path) -> None:
    dest = tmp_path / "data"
    download_corpus("NCBI-disease", dest, splits=["dev"], base_url=f"{mirror}/good")
    with pytest.raises(DownloadError):
        download_corpus("NCBI-disease", dest, splits=["train"], base_url=f"{mirror}/corrupt")
    assert [p.name for p in _leftovers(dest / "NCBI-disease")] == ["dev.tsv"]


def test_truncated_response_rejected_and_nothing_left(mirror: str, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="truncated response") as info:
        download_corpus(
            "NCBI-disease", tmp_path / "d", splits=["dev"], base_url=f"{mirror}/truncated"
        )
    assert info.value.url.endswith("/truncated/NCBI-disease/dev.tsv")
    assert not (tmp_path / "d").exists()


def test_truncation_caught_even_without_checksum(mirror: str, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="truncated response"):
        download_corpus(
            "BC4CHEMD",
            tmp_path,
            splits=["dev"],
            base_url=f"{mirror}/truncated",
            allow_unverified=True,
        )
    assert _leftovers(tmp_path) == []


def test_truncation_at_a_line_boundary_caught_without_checksum(mirror: str, tmp_path: Path) -> None:
    """No Content-Length to compare and no checksum: the body parses as IOB2, but a corpus
    file ends with the blank line that closes its last sentence, and this one does not."""
    with pytest.raises(DownloadError, match="incomplete IOB2 file") as info:
        download_corpus(
            "BC4CHEMD",
            tmp_path,
            splits=["dev"],
            base_url=f"{mirror}/linecut",
            allow_unverified=True,
        )
    assert info.value.url == f"{mirror}/linecut/BC4CHEMD/dev.tsv"
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("value", ["\u00b2", "1\u00b2", "abc", "-1", "+36", "1e3", "3_0", "36, 36"])
def test_bad_content_length_is_a_download_error(mirror: str, tmp_path: Path, value: str) -> None:
    base = f"{mirror}/length/{urllib.parse.quote(value, safe='')}"
    with pytest.raises(DownloadError, match="bad Content-Length header") as info:
        download_corpus("NCBI-disease", tmp_path / "d", splits=["dev"], base_url=base)
    assert info.value.url == f"{base}/NCBI-disease/dev.tsv"
    assert info.value.url in str(info.value) and repr(value) in str(info.value)
    assert not (tmp_path / "d").exists()


def test_file_is_synced_to_disk_before_the_rename(
    mirror: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        events.append(("replace", os.fspath(src)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    (path,) = download_corpus("NCBI-disease", tmp_path, splits=["dev"], base_url=f"{mirror}/good")
    assert sha256_file(path) == get_corpus("NCBI-disease").sha256("dev")
    (renamed,) = [p for kind, p in events if kind == "replace"]
    assert events.index(("fsync", renamed)) < events.index(("replace", renamed))


def test_http_error_names_url(mirror: str, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="HTTP 404") as info:
        download_corpus("NCBI-disease", tmp_path / "d", splits=["dev"], base_url=f"{mirror}/nope")
    assert info.value.url == f"{mirror}/nope/NCBI-disease/dev.tsv"
    assert not (tmp_path / "d").exists()


def test_unreachable_server_is_a_download_error(tmp_path: Path) -> None:
    port = free_port()  # free a moment ago: nothing listens
    with pytest.raises(DownloadError, match="cannot connect"):
        download_corpus(
            "NCBI-disease", tmp_path / "d", ["dev"], base_url=f"http://127.0.0.1:{port}", timeout=5
        )
    assert not (tmp_path / "d").exists()


def test_unverified_corpus_refused_by_default(mirror: str, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="no registered checksum"):
        download_corpus("BC4CHEMD", tmp_path / "d", base_url=f"{mirror}/good")
    assert not (tmp_path / "d").exists()


def test_unverified_corpus_allowed_logs_digest(
    mirror: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="biogner.corpora.download"):
        paths = download_corpus(
            "BC4CHEMD", tmp_path, base_url=f"{mirror}/good", allow_unverified=True
        )
    assert [p.read_bytes() for p in paths] == [SMALL_IOB2] * 3
    assert sha256_file(paths[0]) in caplog.text


def test_html_page_is_not_accepted_as_a_corpus(mirror: str, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="not an IOB2 file"):
        download_corpus(
            "BC4CHEMD", tmp_path, splits=["train"], base_url=f"{mirror}/html", allow_unverified=True
        )
    assert _leftovers(tmp_path) == []


def test_unknown_corpus_and_split() -> None:
    with pytest.raises(KeyError, match="NCBI-disease"):
        download_corpus("no-such-corpus", Path("unused"))
    with pytest.raises(KeyError, match="validation"):
        download_corpus("NCBI-disease", Path("unused"), splits=["validation"])


def test_canonical_urls_without_mirror() -> None:
    corpus = get_corpus("JNLPBA")
    assert split_url(corpus, "dev").endswith("/JNLPBA-IOB/devel.tsv")
    assert split_url(corpus, "dev", "http://m/x/") == "http://m/x/JNLPBA/dev.tsv"


def test_count_sentences_agrees_with_reader(tmp_path: Path) -> None:
    path = tmp_path / "x.tsv"
    path.write_bytes(b"-DOCSTART-\tO\n\n\na\tO\n\n-DOCSTART-\tO\nb\tB-X\nc\tO\n\n\nd\tO")
    assert count_sentences(path) == 3 == len(list(read_iob2(path)))  # [a], [b c], [d]


def test_count_sentences_agrees_with_reader_on_jnlpba() -> None:
    """JNLPBA's -DOCSTART- lines and blank-line runs, as the corpus has them."""
    data = corpora_dir("JNLPBA", splits=["dev"])
    assert count_sentences(data / "JNLPBA" / "dev.tsv") == len(load_split("JNLPBA", "dev", data))


def test_corpora_status_and_table(mirror: str, tmp_path: Path) -> None:
    download_corpus("NCBI-disease", tmp_path, base_url=f"{mirror}/good")
    (tmp_path / "s800").mkdir()
    (tmp_path / "s800" / "dev.tsv").write_bytes(SMALL_IOB2)
    rows = {r["name"]: r for r in corpora_status(tmp_path)}
    assert set(rows) == {
        "AnatEM", "BC2GM", "BC4CHEMD", "BC5CDR", "BC5CDR-chem", "BC5CDR-disease",
        "JNLPBA", "NCBI-disease", "linnaeus", "s800",
    }  # fmt: skip
    ncbi = rows["NCBI-disease"]
    assert ncbi["splits"] == ["train", "dev", "test"]
    assert ncbi["sentences"] == {"train": 5424, "dev": 923, "test": 940}
    assert ncbi["verified"] is True and ncbi["entity_types"] == ("Disease",)
    assert rows["s800"]["verified"] is False and rows["s800"]["mismatched"] == ["dev"]
    assert rows["s800"]["sentences"] == {"dev": 2}
    assert rows["AnatEM"]["splits"] == [] and rows["AnatEM"]["verified"] is None

    table = format_corpora_table(rows.values()).splitlines()
    assert table[0].split()[0] == "CORPUS" and len(table) == 1 + len(rows)
    ncbi_line = next(line for line in table if line.startswith("NCBI-disease"))
    assert "5424/923/940" in ncbi_line and ncbi_line.split()[-2:] == ["yes", "built-in"]
    assert "NO (dev)" in next(line for line in table if line.startswith("s800"))
    assert "-/-/-" in next(line for line in table if line.startswith("AnatEM"))
    # columns are aligned: every data cell of column 2 starts where the header's does
    col = table[0].index("ENTITY TYPES")
    assert all(line[col - 2 : col] == "  " and line[col] != " " for line in table[1:])


def test_an_endless_body_is_cut_at_the_size_cap_and_nothing_left(
    mirror: str, tmp_path: Path
) -> None:
    with pytest.raises(DownloadError, match="larger than 200000 bytes"):
        download_corpus(
            "NCBI-disease",
            tmp_path / "d",
            splits=["dev"],
            base_url=f"{mirror}/endless",
            max_bytes=200_000,
        )
    assert not (tmp_path / "d").exists()


def test_a_dripping_body_meets_the_overall_deadline(mirror: str, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="not received within 1 s"):
        download_corpus(
            "NCBI-disease",
            tmp_path / "d",
            splits=["dev"],
            base_url=f"{mirror}/drip",
            deadline_s=1.0,
        )
    assert not (tmp_path / "d").exists()


def test_an_overlong_line_is_refused_naming_it(tmp_path: Path) -> None:
    from biogner.corpora.iob import MAX_LINE_BYTES, IOBError, read_iob2

    path = tmp_path / "x.tsv"
    path.write_bytes(b"Cancer\tB-Disease\n" + b"a" * (MAX_LINE_BYTES + 10) + b"\tO\n\n")
    with pytest.raises(IOBError, match=f"x.tsv:2: line longer than {MAX_LINE_BYTES} bytes"):
        list(read_iob2(path))


def test_the_demo_corpus_is_fetched_when_missing_and_kept_after(
    mirror: str, tmp_path: Path
) -> None:
    from biogner.corpora.download import ensure_corpus

    folder, fetched = ensure_corpus("NCBI-disease", tmp_path / "data", f"{mirror}/good")
    assert fetched and folder == tmp_path / "data"
    assert sorted(p.name for p in (folder / "NCBI-disease").iterdir()) == [
        "dev.tsv",
        "test.tsv",
        "train.tsv",
    ]
    assert ensure_corpus("NCBI-disease", tmp_path / "data", "http://127.0.0.1:1") == (
        folder,
        False,
    )


def test_an_offline_demo_says_in_one_line_what_to_run(tmp_path: Path, capsys) -> None:
    """A clone with no corpus folder and no network: not a traceback, the command to run."""
    from biogner.cli import main

    code = main(
        [
            "demo",
            "--tiny",
            "--home",
            str(tmp_path / "home"),
            "--data-dir",
            str(tmp_path / "none"),
            "--mirror",
            "http://127.0.0.1:1",
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: http://127.0.0.1:1/")
    assert "biogner data download NCBI-disease --to DIR" in err[0]
    assert not (tmp_path / "none" / "NCBI-disease").exists()
