"""A writing defined in this test module alone gets both turn styles, rendering, parsing,
conversion rows, a generation budget and free generation, with no other change (#13)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from conftest import write_noise_model

from biogner.data import render_rows
from biogner.formats import FORMATS, WRITINGS, get_format, register_writing
from biogner.formats.base import MentionPlacer, ParseResult, Writing
from biogner.generation import Generator
from biogner.models.config import GenerationConfig
from biogner.types import Sentence, Span

SEP = " | "


class PipeWriting(Writing):
    """Mentions on one line, separated by ` | `; `-` when there are none."""

    name = "pipe"
    exact = False
    nesting = True
    instruction = "Mentions on one line, separated by |; - if none."
    budget_per_text_token = 1.25
    budget_floor = 7

    def render(self, sentence: Sentence, spans: Sequence[Span], types: Sequence[str]) -> str:
        mentions = [s.text_in(sentence.text) for s in sorted(spans)]
        return SEP.join(mentions) if mentions else "-"

    def parse(self, answer: str, sentence: Sentence, types: Sequence[str]) -> ParseResult:
        result = ParseResult()
        placer = MentionPlacer(sentence, result)
        if answer.strip() != "-":
            for mention in answer.split(SEP):
                placer.place(mention.strip(), types[0])
        return result.finish()


@pytest.fixture
def pipe() -> Iterator[list[str]]:
    names = register_writing(PipeWriting())
    yield names
    del WRITINGS["pipe"]
    for name in names:
        del FORMATS[name]


TOKENS = ["Ataxia", "-", "telangiectasia", "and", "colon", "cancer", "."]
TEXT = " ".join(TOKENS)
SPANS = [
    Span(0, len("Ataxia - telangiectasia"), "Disease"),
    Span(TEXT.index("colon"), TEXT.index(" ."), "Disease"),
]
SENTENCE = Sentence.from_tokens("s1", TOKENS, SPANS)


def test_a_registered_writing_has_both_turn_styles_and_round_trips(pipe: list[str]) -> None:
    assert pipe == ["multi_pipe", "conv_pipe"]
    for name in pipe:
        fmt = get_format(name)
        assert fmt.roundtrip(SENTENCE, ["Disease"]) == list(SENTENCE.spans)
        answers = fmt.answers(SENTENCE, ["Disease"])
        assert answers == ["Ataxia - telangiectasia | colon cancer"]
    with pytest.raises(ValueError, match="already registered"):
        register_writing(PipeWriting())


def test_conversion_rows_and_the_generation_budget_come_from_the_writing(
    pipe: list[str], tmp_path: Path
) -> None:
    (row,) = render_rows(SENTENCE, "NCBI-disease", "train", ["conv_pipe"])
    assert row["format"] == "conv_pipe"
    assert row["target"] == "Ataxia - telangiectasia | colon cancer"
    assert row["messages"][-1] == {"role": "assistant", "content": row["target"]}

    model_dir = write_noise_model(tmp_path / "noise", seed=0)
    cfg = GenerationConfig(device="cpu", dtype="float32", max_new_tokens_cap=64)
    generator = Generator(model_dir, cfg)
    fmt = get_format("multi_pipe")
    n_text = len(generator.tokenizer(SENTENCE.text, add_special_tokens=False)["input_ids"])
    budget = generator.answer_budget(fmt, SENTENCE, 1)
    assert budget == max(-(-5 * n_text // 4), 7)  # ceil(1.25 x text tokens), floor 7
    (gen,) = generator.extract([SENTENCE], fmt, ["Disease"])  # no grammar: decoded free
    assert len(gen.answer_tokens) == 1 and 0 < len(gen.answer_tokens[0]) <= budget
    # whatever the noise model wrote, the writing's parser placed only spans of the sentence
    assert all(0 <= sp.start < sp.end <= len(TEXT) for sp in gen.parse.spans)
    assert gen.parse.predicted_mentions >= len(gen.parse.spans)
