"""Assistant-only loss masks: exactly the answers (and their end-of-turn token) are supervised,
for tiny-llama's ChatML, SmolLM2's template and the plain fallback template."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from biogner.chat_tokens import IGNORE_INDEX, ChatTokens, prompt_ids, tokenize_chat
from biogner.models.config import ModelLoadError
from biogner.models.load import load_tokenizer
from biogner.prompts import render_chat

SINGLE = [
    {"role": "user", "content": "Text: Germline mutations of BRCA1 cause breast cancer .\nList."},
    {"role": "assistant", "content": "breast cancer"},
]
MULTI = [
    {"role": "system", "content": "You extract biomedical entities."},
    {"role": "user", "content": "Text: APC loss causes colon cancer .\nWhat describes Disease?"},
    {"role": "assistant", "content": '["colon cancer"]'},
    {"role": "user", "content": "What describes GENE in the text?"},
    {"role": "assistant", "content": "APC"},
    {"role": "user", "content": "What describes Chemical in the text?"},
    {"role": "assistant", "content": "None"},
]


def supervised_runs(row: ChatTokens) -> list[list[int]]:
    """Maximal runs of consecutive supervised tokens."""
    runs: list[list[int]] = []
    previous = IGNORE_INDEX
    for token, label in zip(row["input_ids"], row["labels"], strict=True):
        if label != IGNORE_INDEX:
            assert label == token
            if previous == IGNORE_INDEX:
                runs.append([])
            runs[-1].append(token)
        previous = label
    return runs


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return load_tokenizer("tiny-llama", cache_dir=tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def smollm2() -> Any:
    """Loaded once per run from the shared model cache (converted from GGUF the first time)."""
    try:
        return load_tokenizer("smollm2-135m")
    except ModelLoadError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def plain(tiny: Any) -> Any:
    tokenizer = copy.deepcopy(tiny)
    tokenizer.chat_template = None
    return tokenizer


@pytest.fixture(params=["tiny", "smollm2", "plain"])
def tokenizer(request: pytest.FixtureRequest) -> Any:
    return request.getfixturevalue(request.param)


@pytest.mark.parametrize("messages", [SINGLE, MULTI], ids=["single", "multi"])
def test_only_assistant_answers_and_end_token_are_supervised(tokenizer: Any, messages) -> None:
    row = tokenize_chat(tokenizer, messages)
    answers = [m["content"] for m in messages if m["role"] == "assistant"]
    decoded = [tokenizer.decode(run) for run in supervised_runs(row)]
    assert decoded == [answer + tokenizer.eos_token for answer in answers]
    assert len(row["input_ids"]) == len(row["labels"]) == len(row["attention_mask"])
    assert set(row["attention_mask"]) == {1} and row["truncated"] is False
    # the ids are those of the whole rendered conversation, as apply_chat_template makes them
    full = render_chat(tokenizer, messages, add_generation_prompt=False)
    assert row["input_ids"] == tokenizer(full, add_special_tokens=False)["input_ids"]


def test_prompt_ids_prefix_the_training_row(tokenizer: Any) -> None:
    """Generation starts from exactly the tokens training saw before each answer."""
    row = tokenize_chat(tokenizer, MULTI)
    for k, message in enumerate(MULTI):
        if message["role"] != "assistant":
            continue
        prompt = prompt_ids(tokenizer, MULTI[:k])
        assert row["input_ids"][: len(prompt)] == prompt
        assert row["labels"][len(prompt) - 1] == IGNORE_INDEX
        assert row["labels"][len(prompt)] != IGNORE_INDEX


def test_smollm2_keeps_its_default_system_prompt(smollm2: Any) -> None:
    text = render_chat(smollm2, SINGLE, add_generation_prompt=False)
    assert text.startswith("<|im_start|>system\n") and "SmolLM" in text


def test_plain_template_layout(plain: Any) -> None:
    text = render_chat(plain, SINGLE[:1], add_generation_prompt=True)
    assert text == f"### User:\n{SINGLE[0]['content']}\n### Assistant:\n"


def test_truncation_is_reported(tiny: Any) -> None:
    full = tokenize_chat(tiny, MULTI)
    cut = tokenize_chat(tiny, MULTI, max_length=10)
    assert cut["truncated"] is True and len(cut["input_ids"]) == 10
    assert cut["input_ids"] == full["input_ids"][:10] and cut["labels"] == full["labels"][:10]
    fits = tokenize_chat(tiny, MULTI, max_length=len(full["input_ids"]))
    assert fits["truncated"] is False and fits["input_ids"] == full["input_ids"]


def test_bad_conversations_are_refused(tiny: Any) -> None:
    with pytest.raises(ValueError, match="message 1"):
        tokenize_chat(tiny, [{"role": "user", "content": "x"}, {"role": "robot", "content": "y"}])
    with pytest.raises(ValueError, match="message 0"):
        tokenize_chat(tiny, [{"role": "assistant", "content": "y"}])
    with pytest.raises(ValueError, match="last message is an assistant"):
        prompt_ids(tiny, SINGLE)
    with pytest.raises(ValueError, match="empty"):
        tokenize_chat(tiny, [])


_text = st.text(
    st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"), max_size=40
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(question=_text, answers=st.lists(_text, min_size=1, max_size=3))
def test_any_answers_are_recovered_exactly(tiny: Any, question: str, answers: list[str]) -> None:
    messages: list[dict[str, str]] = []
    for answer in answers:
        messages += [
            {"role": "user", "content": question},
            {"role": "assistant", "content": answer},
        ]
    row = tokenize_chat(tiny, messages)
    supervised = [t for t, lab in zip(row["input_ids"], row["labels"], strict=True) if lab != -100]
    assert tiny.decode(supervised) == "".join(a + "<|im_end|>" for a in answers)


def test_smollm2_tokenizer_comes_from_the_cache(smollm2: Any) -> None:
    from biogner.models.cache import BUILD_MARKER
    from biogner.models.load import resolve_model_dir

    built = resolve_model_dir("smollm2-135m")
    assert built is not None and (Path(built) / BUILD_MARKER).is_file()
    assert (Path(built) / "config.json").is_file()
