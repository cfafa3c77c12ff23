"""Type routing: a model trained on several corpora is asked each corpus's types together,
as it learned them, and a request's types are kept from its answers (`generation.routing`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import write_noise_model

from biogner.corpora import load_split
from biogner.generation import Generator
from biogner.generation.routing import ask_plan
from biogner.models.card import ModelCard
from biogner.models.config import METADATA_FILE, GenerationConfig

GROUPS = [["Chemical", "Disease"], ["Species"], ["protein", "DNA"]]


def test_ask_plan_asks_whole_groups_in_model_order() -> None:
    assert ask_plan(["Chemical"], GROUPS) == [["Chemical", "Disease"]]
    assert ask_plan(["DNA", "Chemical", "DNA"], GROUPS) == [
        ["Chemical", "Disease"],
        ["protein", "DNA"],
    ]
    # a type no group holds is asked on its own question, after the groups
    assert ask_plan(["Gene", "Species"], GROUPS) == [["Species"], ["Gene"]]
    assert ask_plan(["Gene"], []) == [["Gene"]]


def test_type_groups_of_a_model_logged_before_groups_existed() -> None:
    old = ModelCard.model_validate({"format": "multi_term", "entity_types": ["A", "B"]})
    assert old.type_groups == [["A", "B"]]  # asked all its types together, as it was trained
    new = ModelCard(format="multi_term", entity_types=["A", "B"], type_groups=[["A"], ["B"]])
    assert new.type_groups == [["A"], ["B"]]


@pytest.fixture(scope="module")
def routed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A noise model whose card says it learned GROUPS (its answers depend on the prompt)."""
    out = write_noise_model(tmp_path_factory.mktemp("routed"), seed=3)
    types = [t for group in GROUPS for t in group]
    meta = {"format": "multi_inline", "entity_types": types, "type_groups": GROUPS}
    (out / METADATA_FILE).write_text(json.dumps(meta))
    return out


def test_a_request_is_asked_in_the_groups_the_model_learned(data_dir, routed: Path) -> None:
    sentences = load_split("BC5CDR", "dev", data_dir, limit=8)
    cfg = GenerationConfig(device="cpu", dtype="float32", max_new_tokens_cap=48, batch_size=4)
    gen = Generator(routed, cfg)
    fmt = "multi_inline"
    whole = gen.extract(sentences, fmt, ["Chemical", "Disease"])  # a whole group: as asked
    only_chemical = gen.extract(sentences, fmt, ["Chemical"])
    # one question, the group's: the same answers as asking the whole group ...
    assert [g.answers for g in only_chemical] == [g.answers for g in whole]
    # ... with the requested type's spans only
    labels = {s.label for g in whole for s in g.parse.spans}
    assert labels == {"Chemical", "Disease"}  # the filter below has something to remove
    for one, both in zip(only_chemical, whole, strict=True):
        assert one.parse.spans == [s for s in both.parse.spans if s.label == "Chemical"]
    # two groups: two questions, answers in the model's group order, spans of both kept
    species = gen.extract(sentences, fmt, ["Species"])
    mixed = gen.extract(sentences, fmt, ["Species", "Chemical"])
    for g, c, s in zip(mixed, whole, species, strict=True):
        assert g.answers == [*c.answers, *s.answers]
        expected = [x for x in c.parse.spans if x.label == "Chemical"] + s.parse.spans
        assert g.parse.spans == sorted(set(expected))
        assert g.generated_tokens == c.generated_tokens + s.generated_tokens


def count_passes(gen: Generator) -> list[int]:
    """A list that grows by one per forward pass of the model's body."""
    passes: list[int] = []
    gen.model.base_model.register_forward_hook(lambda *_: passes.append(1))
    return passes


@pytest.mark.parametrize("fmt", ["multi_inline", "conv_term"])
def test_the_groups_of_a_request_share_one_batch(data_dir, routed: Path, fmt: str) -> None:
    """Several groups are rows of the same batches (a lone request's groups decode in one
    batch's passes), with the answers each group gets asked alone; in `conv` a group of two
    types asks two turns and a group of one type one, so they go in separate batches."""
    sentences = load_split("BC5CDR", "dev", data_dir, limit=3)
    cfg = GenerationConfig(device="cpu", dtype="float32", max_new_tokens_cap=40, batch_size=16)
    gen = Generator(routed, cfg)
    passes = count_passes(gen)
    groups = [["Chemical", "Disease"], ["Species"], ["protein", "DNA"]]
    alone, per_group = [], []
    for group in groups:
        passes.clear()
        alone.append(gen.extract(sentences, fmt, group))  # a whole group: asked as it is
        per_group.append(len(passes))
    passes.clear()
    together = gen.extract(sentences, fmt, ["Species", "DNA", "Chemical"])
    for k, joined in enumerate(together):
        assert joined.answers == [a for parts in alone for a in parts[k].answers]
        spans = sorted(
            {
                s
                for parts in alone
                for s in parts[k].parse.spans
                if s.label in {"Species", "DNA", "Chemical"}
            }
        )
        assert joined.parse.spans == spans
    # multi: one batch of 9 rows (its rows draft less than 3 rows alone: a few more passes
    # than the slowest group); conv: the two-turn groups (Chemical, Disease; protein, DNA)
    # in one batch, Species in another
    if fmt.startswith("multi"):
        assert len(passes) < sum(per_group) / 2
    else:
        assert len(passes) < sum(per_group)


def test_rows_asked_different_questions_share_a_batch_with_their_prefixes(
    data_dir, routed: Path
) -> None:
    """Each row's cached prompt prefix is its own question's, left-padded in one batch: the
    answers equal those decoded with no prefix cache at all."""
    sentences = load_split("BC5CDR", "dev", data_dir, limit=4)
    base = dict(device="cpu", dtype="float32", max_new_tokens_cap=40, batch_size=16)
    types = ["Chemical", "Species", "DNA"]
    cached = Generator(routed, GenerationConfig(**base)).extract(sentences, "multi_inline", types)
    whole = Generator(routed, GenerationConfig(**base, prefix_cache=False)).extract(
        sentences, "multi_inline", types
    )
    assert [g.answer_tokens for g in cached] == [g.answer_tokens for g in whole]
