"""Rows joining a running batch (`generation.rows_join`, `generation.continuous`): the answers are
those of batches cut from a list and of step-by-step greedy decoding, token for token, while
sentences do join batches whose other rows are half-way through their answers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import write_noise_model
from transformers import DynamicCache

from biogner.corpora import load_split
from biogner.generation import Generator
from biogner.generation.kv import BatchKV
from biogner.models.config import METADATA_FILE, GenerationConfig
from biogner.types import Sentence


@pytest.fixture(scope="module")
def sentences(data_dir: Path) -> list[Sentence]:
    return load_split("BC5CDR", "dev", data_dir, limit=40)[24:38]


@pytest.fixture(scope="module")
def noise_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_noise_model(tmp_path_factory.mktemp("noise"), seed=5)


def answers(model: Path, sentences: list[Sentence], fmt: str, types: list[str], **switches):
    """What a Generator answers, rows joining (`rows_join`) unless the switches say not."""
    cfg = GenerationConfig(
        device="cpu",
        dtype="float32",
        max_new_tokens_cap=40,
        batch_size=4,
        **{"rows_join": True, **switches},
    )
    return [
        (g.answer_tokens, g.parse.overruled, g.parse.dropped, g.parse.scores)
        for g in Generator(model, cfg).extract(sentences, fmt, types)
    ]


@pytest.mark.parametrize(
    ("fmt", "types"),
    [
        ("multi_inline", ["Chemical", "Disease"]),
        ("multi_bio", ["Chemical", "Disease"]),
        ("multi_term", ["Chemical", "Disease"]),
        ("conv_json", ["Disease"]),  # conv asked one type: one turn, a stream too
    ],
)
@pytest.mark.parametrize("model", ["copier", "noise"])
def test_joined_rows_answer_as_in_batches_cut_from_a_list(
    monkeypatch: pytest.MonkeyPatch,
    copier_model: Path,
    noise_model: Path,
    sentences: list[Sentence],
    fmt: str,
    types: list[str],
    model: str,
) -> None:
    path = {"copier": copier_model, "noise": noise_model}[model]
    joins: list[tuple[int, int]] = []  # (rows running, rows joining)
    join = BatchKV.join

    def spy(self: BatchKV, other: BatchKV) -> BatchKV:
        joins.append((self.rows, other.rows))
        return join(self, other)

    monkeypatch.setattr(BatchKV, "join", spy)
    streamed = answers(path, sentences, fmt, types)
    # 14 sentences, 4 rows: later sentences joined rows that were still answering
    assert sum(n for _, n in joins) == len(sentences)
    assert any(running > 0 for running, _ in joins), joins
    assert answers(path, sentences, fmt, types, rows_join=False) == scored_near(streamed)
    assert answers(path, sentences, fmt, types, decoder="hf") == scored_near(streamed)


def scored_near(found: list[tuple]) -> list[tuple]:
    """Answers to compare: tokens and counts exact, entity scores up to float rounding (a
    batch of other rows sums in another order)."""
    return [(*a[:3], pytest.approx(a[3], abs=1e-4)) for a in found]


def test_joined_rows_without_a_prefix_cache(copier_model: Path, sentences: list[Sentence]):
    """Rows joining with nothing cached (no shared prefix): a cache part of width 0."""
    types = ["Chemical", "Disease"]
    off = answers(copier_model, sentences, "multi_inline", types, prefix_cache=False)
    assert scored_near(off) == answers(
        copier_model, sentences, "multi_inline", types, prefix_cache=False, rows_join=False
    )


def kv(mask: list[list[bool]], first: float) -> BatchKV:
    """A one-layer cache whose key at (row, column) is first + 10 row + column."""
    rows, cols = len(mask), len(mask[0])
    values = first + 10 * torch.arange(rows)[:, None] + torch.arange(cols)[None, :]
    keys = values.float().reshape(rows, 1, cols, 1)
    return BatchKV(DynamicCache(ddp_cache_data=[(keys, -keys)]), torch.tensor(mask))


def test_a_join_drops_the_columns_no_row_uses_and_right_aligns_both_parts() -> None:
    running = kv([[False, True, False, True], [False, False, True, True]], first=0)
    joining = kv([[True, True]], first=100)
    joined = running.join(joining)
    # column 0 was used by no row: gone; the joining row's two columns at the right
    assert joined.mask.tolist() == [
        [True, False, True],
        [False, True, True],
        [False, True, True],
    ]
    keys, values = joined.layers()[0]
    assert keys[:, 0, :, 0].tolist() == [[1, 2, 3], [11, 12, 13], [0, 100, 101]]
    assert torch.equal(values, -keys)
    # into an empty batch: the joining part as it is
    empty = BatchKV.empty(0, torch.device("cpu"))
    assert empty.join(joining) is joining


def routed_model(out: Path) -> Path:
    """A noise model whose card says it learned two type groups."""
    write_noise_model(out, seed=7)
    groups = [["Chemical", "Disease"], ["Species"]]
    meta = {"format": "multi_inline", "entity_types": ["Chemical", "Disease", "Species"]}
    (out / METADATA_FILE).write_text(json.dumps({**meta, "type_groups": groups}))
    return out


@pytest.mark.parametrize(
    ("fmt", "types", "join"),
    [
        ("multi_inline", ["Disease", "Species"], True),  # two questions, one turn each
        ("multi_inline", ["Disease", "Species"], False),  # a batch at a time
        ("conv_term", ["Chemical", "Disease"], True),  # two turns: a batch at a time
    ],
)
def test_sentences_arriving_while_others_are_decoded(
    tmp_path: Path, sentences: list[Sentence], fmt: str, types: list[str], join: bool
) -> None:
    """`Generator.batch_continuously` (serving): sentences handed over in bursts as the model
    asks for more get the answers `extract` gives them, each handed back once, as soon as it
    is done."""
    cfg = GenerationConfig(
        device="cpu", dtype="float32", max_new_tokens_cap=40, batch_size=4, rows_join=join
    )
    gen = Generator(routed_model(tmp_path / "routed"), cfg)
    expected = gen.extract(sentences, fmt, types)
    # a burst per call for more; [] : nothing new right now
    bursts = [sentences[:3], [], sentences[3:4], sentences[4:]]
    keyed = list(enumerate(sentences))
    waiting: list[tuple[int, Sentence]] = []
    got: dict[int, object] = {}

    def intake(room: int) -> list[tuple[int, Sentence]]:
        if bursts:
            burst = bursts.pop(0)
            waiting.extend(keyed[: len(burst)])
            del keyed[: len(burst)]
        out, waiting[:] = waiting[:room], waiting[room:]
        return out

    def done(key: int, generation: object) -> None:
        assert key not in got
        got[key] = generation

    gen.batch_continuously(fmt, types, intake, done)
    while bursts or waiting:  # the stream ended on an empty hand-over: start it again
        gen.batch_continuously(fmt, types, intake, done)
    assert sorted(got) == list(range(len(sentences)))
    for k, generation in got.items():
        assert generation.answers == expected[k].answers  # type: ignore[attr-defined]
        assert generation.parse.spans == expected[k].parse.spans  # type: ignore[attr-defined]
