"""The decoders a `Generator` can run, chosen once from its config (`decoder_for`).

- `decode`: biogner's loop (`decode.conversation`) over batches cut from a list.
- `continuous`: the same loop, and one-turn answers decoded by continuous batching
  (`continuous.batch_continuously`): waiting sentences join the running batch as rows leave
  (`generation.rows_join`, with `rows_leave`).
- `reference`: transformers' `generate` with the grammar's mask at every step
  (`reference.conversation`, `generation.decoder: hf`), the oracle the others equal.

Every decoder decodes a batch of conversations (`Decoder.conversation`); only `continuous`
also has `batch_continuously`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from biogner.generation.answer import Turn
from biogner.generation.constraints import RowConstraint
from biogner.generation.continuous import Ask, batch_continuously
from biogner.generation.decode import conversation
from biogner.generation.loaded import LoadedLM
from biogner.generation.reference import conversation as generate_conversation
from biogner.generation.speculation import Drafter
from biogner.models.config import GenerationConfig

Chat = list[dict[str, str]]
# A batch of conversations decoded turn by turn (`decode.conversation`): the loaded model,
# the chats so far, each row's questions and answer budgets, its grammar and drafter per
# (row, turn), its shared prompt prefix, whether forced tokens are checked.
Conversation = Callable[
    [
        LoadedLM,
        list[Chat],
        list[list[str]],
        list[int],
        Callable[[int, int], RowConstraint | None] | None,
        Callable[[int, int], Drafter | None] | None,
        Sequence[list[int] | None] | None,
        bool,
    ],
    list[list[Turn]],
]
# One-turn questions decoded as they arrive (`continuous.batch_continuously`): the loaded
# model, the intake, the callback per answer, the batch size, whether forced tokens are
# checked.
JoiningLoop = Callable[
    [LoadedLM, Callable[[int], list[Ask]], Callable[[int, Turn], None], int, bool], None
]


def reference_conversation(
    lm: LoadedLM,
    chats: list[Chat],
    questions: list[list[str]],
    budgets: list[int],
    constraint_for: Callable[[int, int], RowConstraint | None] | None,
    *_: object,
) -> list[list[Turn]]:
    """`reference.conversation` as a `Conversation`: `generate` drafts nothing, encodes
    whole prompts and checks no forced token, so it takes only the grammar."""
    return generate_conversation(lm, chats, questions, budgets, constraint_for)


@dataclass(frozen=True)
class Decoder:
    """One way of decoding: its batch loop, whether it reuses the shared prompt prefixes
    (`PrefixCache`), and its loop for rows joining a running batch (None: it has none)."""

    name: str
    conversation: Conversation
    shares_prefixes: bool
    batch_continuously: JoiningLoop | None = None


DECODERS: dict[str, Decoder] = {
    "decode": Decoder("decode", conversation, shares_prefixes=True),
    "continuous": Decoder(
        "continuous", conversation, shares_prefixes=True, batch_continuously=batch_continuously
    ),
    "reference": Decoder("reference", reference_conversation, shares_prefixes=False),
}


def decoder_for(cfg: GenerationConfig) -> Decoder:
    """The decoder `cfg` asks for: `reference` for `decoder: hf`; for biogner's loop,
    `continuous` where rows leave and join, else `decode`."""
    if cfg.decoder == "hf":
        return DECODERS["reference"]
    return DECODERS["continuous" if cfg.rows_leave and cfg.rows_join else "decode"]
