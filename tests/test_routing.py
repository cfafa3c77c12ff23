"""Type routing: a model trained on several corpora is asked each corpus's types together,
as it learned them, and a request's types are kept from its answers (`generation.routing`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import write_noise_model

from biogner.corpora import load_split
from biogner.formats import get_format
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
    whole = gen._extract(sentences, get_format(fmt), ["Chemical", "Disease"])
    only_chemical = gen.extract(sentences, fmt, ["Chemical"])
    # one question, the group's: the same answers as asking the whole group ...
    assert [g.answers for g in only_chemical] == [g.answers for g in whole]
    # ... with the requested type's spans only
    labels = {s.label for g in whole for s in g.parse.spans}
    assert labels == {"Chemical", "Disease"}  # the filter below has something to remove
    for one, both in zip(only_chemical, whole, strict=True):
        assert one.parse.spans == [s for s in both.parse.spans if s.label == "Chemical"]
    # two groups: two questions, answers in the model's group order, spans of both kept
    species = gen._extract(sentences, get_format(fmt), ["Species"])
    mixed = gen.extract(sentences, fmt, ["Species", "Chemical"])
    for g, c, s in zip(mixed, whole, species, strict=True):
        assert g.answers == [*c.answers, *s.answers]
        expected = [x for x in c.parse.spans if x.label == "Chemical"] + s.parse.spans
        assert g.parse.spans == sorted(set(expected))
        assert g.generated_tokens == c.generated_tokens + s.generated_tokens
