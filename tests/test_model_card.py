"""The model card (`biogner_model.json`) has a schema: readers get typed fields, a broken
card is refused naming its file and field, a multi-format model states what it is served in."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from biogner.models.card import CARD_VERSION, ModelCard, ModelCardError, read_card
from biogner.models.config import METADATA_FILE


def write(tmp_path: Path, card: object) -> Path:
    (tmp_path / METADATA_FILE).write_text(json.dumps(card))
    return tmp_path


def test_a_card_written_before_the_schema_reads_with_its_defaults(tmp_path: Path) -> None:
    old = {"format": "conv_term", "entity_types": ["Disease"], "base_model": "smollm2-135m"}
    card = read_card(write(tmp_path, {**old, "run": "r1"}))
    assert card.formats == ["conv_term"] and card.type_groups == [["Disease"]]
    assert card.card_version == CARD_VERSION and card.corpora == [] and not card.lora
    assert card.model_extra == {"run": "r1"}  # unknown keys are kept, not dropped


@pytest.mark.parametrize(
    ("card", "says"),
    [
        ({"entity_types": ["Disease"]}, "format: Field required"),
        ({"format": "conv_term", "entity_types": []}, "entity_types: List should have at least"),
        (
            {"format": "conv_term", "formats": ["multi_term"], "entity_types": ["D"]},
            "format 'conv_term' is not among formats",
        ),
        (
            {"format": "conv_term", "entity_types": ["D"], "type_groups": [["D", "X"]]},
            "type_groups name types not in entity_types: ['X']",
        ),
        (["not", "an", "object"], "must be a JSON object"),
    ],
)
def test_a_broken_card_names_its_file_and_field(tmp_path: Path, card: object, says: str) -> None:
    with pytest.raises(ModelCardError) as refused:
        read_card(write(tmp_path, card))
    assert str(tmp_path / METADATA_FILE) in str(refused.value) and says in str(refused.value)


def test_no_card_is_not_a_biogner_model(tmp_path: Path) -> None:
    with pytest.raises(ModelCardError, match="not a biogner model directory"):
        read_card(tmp_path)


def test_a_multi_format_model_is_served_only_in_a_format_it_learned() -> None:
    card = ModelCard(
        format="multi_inline", formats=["multi_inline", "conv_term"], entity_types=["D"]
    )
    assert card.serving_format(None) == "multi_inline"
    assert card.serving_format("conv_term") == "conv_term"
    with pytest.raises(
        ModelCardError, match="trained in \\['multi_inline', 'conv_term'\\], not in"
    ):
        card.serving_format("multi_bio")
