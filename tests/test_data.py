"""Ray Data conversion: rows, partitions, and what training/evaluation read back."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from biogner import prompts
from biogner.corpora import load_split
from biogner.data import (
    ConvertConfig,
    convert,
    read_rows,
    row_sentence,
    shard_is_current,
    shard_path,
)
from biogner.formats import FORMATS, get_format


def test_convert_all_formats_rows_and_round_trip(ray_session, data_dir, tmp_path):
    out = tmp_path / "conv"
    cfg = ConvertConfig(
        corpora=["NCBI-disease", "BC5CDR"],
        formats=["all"],
        splits=["dev"],
        data_dir=str(data_dir),
        out=str(out),
        limit=40,
    )
    summary = convert(cfg)
    assert summary.total_rows == 2 * 40 * len(FORMATS)
    assert {(r["corpus"], r["format"]) for r in summary.rows} == {
        (c, f) for c in ("BC5CDR", "NCBI-disease") for f in FORMATS
    }
    gold = {s.id: s for s in load_split("BC5CDR", "dev", data_dir, limit=40)}
    assert sum(r["entities"] for r in summary.rows if r["corpus"] == "BC5CDR") == 10 * sum(
        len(s.spans) for s in gold.values()
    )
    assert "total: " in summary.table().splitlines()[-1]

    rows = read_rows(out, "BC5CDR", "dev", ["conv_triple"]).take_all()
    assert len(rows) == 40
    fmt = get_format("conv_triple")
    for row in rows:
        sent = row_sentence(row)
        assert sent == gold[row["sentence_id"]]
        assert row["format"] == "conv_triple" and row["corpus"] == "BC5CDR"
        assert list(row["entity_types"]) == ["Chemical", "Disease"]
        messages = [dict(m) for m in row["messages"]]
        assert messages == fmt.render(sent, ["Chemical", "Disease"])
        answers = [m["content"] for m in messages if m["role"] == "assistant"]
        assert fmt.parse(answers, sent, ["Chemical", "Disease"]).spans == list(sent.spans)


def test_partition_files_hold_one_slice(ray_session, data_dir, tmp_path):
    out = tmp_path / "conv"
    convert(
        ConvertConfig(
            formats=["multi_json", "conv_bio"],
            splits=["test"],
            data_dir=str(data_dir),
            out=str(out),
            limit=25,
        )
    )
    folder = shard_path(out, "NCBI-disease", "test", "multi_json")
    table = pq.read_table(sorted(folder.glob("*.parquet")))
    assert table.num_rows == 25
    assert set(table.column_names) >= {"id", "sentence_id", "messages", "target", "n_entities"}
    assert not (out / "corpus=NCBI-disease" / "split=train").exists()


def test_a_slice_rendered_with_another_prompt_is_stale(
    ray_session, data_dir, tmp_path, monkeypatch
):
    out = tmp_path / "conv"
    assert not shard_is_current(out, "NCBI-disease", "dev", "conv_term")  # nothing there yet
    convert(
        ConvertConfig(formats=["conv_term"], splits=["dev"], data_dir=str(data_dir), out=str(out),
                      limit=5)
    )  # fmt: skip
    assert shard_is_current(out, "NCBI-disease", "dev", "conv_term")
    # A later version asks another question: the old rows must not train its models.
    monkeypatch.setattr(prompts, "SYSTEM_PROMPT", "Another system turn.")
    assert not shard_is_current(out, "NCBI-disease", "dev", "conv_term")


def test_convert_names_missing_file_and_unknown_format(tmp_path):
    with pytest.raises(FileNotFoundError, match="NCBI-disease/train.tsv"):
        convert(ConvertConfig(data_dir=str(tmp_path), out=str(tmp_path / "o")))
    with pytest.raises(KeyError, match="unknown format 'conv_xml'"):
        convert(ConvertConfig(formats=["conv_xml"], out=str(tmp_path / "o")))
