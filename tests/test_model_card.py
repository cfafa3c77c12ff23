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


def test_open_model_pins_an_alias_once_and_reads_the_card(store: Path, tmp_path: Path) -> None:
    """One resolution: the version the alias pointed to when opened, whatever moves later."""
    from mlflow_store import make_cfg
    from serve_support import META, log_version, save_tiny_model

    from biogner.tracking.open import open_model
    from biogner.tracking.registry import get_alias_version

    model_dir = save_tiny_model(tmp_path / "tiny")
    first, run = log_version(store, model_dir, "opened")
    cfg = make_cfg(store, "serve-test")
    model = open_model("models:/opened@champion", cfg, temporary=True)
    log_version(store, model_dir, "opened")  # the alias moves on
    assert (model.pinned, model.version, model.run_id) == (f"models:/opened/{first}", first, run)
    assert model.card.entity_types == META["entity_types"] and (model.dir / "config.json").is_file()
    moved = get_alias_version(cfg, "opened", "champion")
    assert moved is not None and str(moved.version) != first
    download = model.download_dir
    assert download is not None and model.dir.is_relative_to(download)
    model.close()
    assert not download.exists()
    local = open_model(str(model_dir), cfg)  # a directory: read in place, nothing downloaded
    assert local.dir == model_dir.resolve() and local.download_dir is None
