"""biogner's decode loop: batched greedy decoding, constrained or free, that computes only
what changes an answer.

Every forward pass feeds each row of the batch what it has ready: at the start of a turn its
prompt (after the shared prefix, `prefix`), then its last chosen token, the tokens its
grammar forces after it (`forced`) and a draft of what follows (`speculation`). The LM head
runs only where a token is chosen or checked. From the logits, each row chooses as
step-by-step constrained greedy decoding would: the model's own top token when the grammar
allows it (checked in microseconds, `RowConstraint.allows`), else the top allowed one (a
whole mask, counted as an overrule). Drafted tokens are kept while they equal that choice.
A row whose answer is done leaves the batch (`rows_leave`); between the turns of a `conv`
format its cache is put aside and gathered again with the others.

What a row computes does not depend on its batch: padding, drafts the model did not confirm
and an answer's cut tail stay in the cache but are masked, and position ids count only the
real tokens (`kv`). The tokens equal those of transformers' `generate` with the grammar's
mask at every step (`reference`), up to floating-point near-ties that another kernel shape
can break the other way (tests/test_generation_property.py, bench/generation.py).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from biogner.chat_tokens import prompt_ids
from biogner.generation.answer import Turn, read_turn
from biogner.generation.constraints import RowConstraint
from biogner.generation.forced import extend_forced
from biogner.generation.kv import BatchKV, RowKV
from biogner.generation.speculation import Drafter

if TYPE_CHECKING:
    from biogner.generation.generator import Generator


class Row:
    """One answer being decoded in a batch."""

    def __init__(
        self,
        feed: list[int],
        length: int,
        budget: int,
        end_ids: frozenset[int],
        constraint: RowConstraint | None,
        drafter: Drafter | None,
    ) -> None:
        self.feed = feed  # tokens to put into the cache next
        self.fed_generated = False  # `feed` holds this turn's tokens (else prompt/question)
        self.checks: list[int] = []  # feed indices of forced tokens to check (item writings)
        self.drafts: list[int] = []  # speculative tokens, fed after `feed`
        self.length = length  # real tokens in the cache: the next position id
        self.start = length + len(feed)  # position of the first answer token
        self.budget = budget
        self.end_ids = end_ids
        self.constraint = constraint
        self.drafter = drafter
        self.tokens: list[int] = []  # generated this turn (an end token included)
        self.probs: list[float] = []  # each token's probability where it was chosen
        self.cols: list[int] = []  # cache columns of `tokens` fed so far
        self.ended = False
        self.reach = 0  # how many tokens to draft next (0: the configured length)
        self.split = 0  # feed only feed[:split] this pass (0: all of it, and the drafts)

    @property
    def finished(self) -> bool:
        return self.ended or len(self.tokens) >= self.budget

    @property
    def draft_room(self) -> int:
        """Most tokens a draft may hold: confirmed, they and the token chosen after them
        must fit the budget."""
        return self.budget - len(self.tokens) - 1

    def commit(self, token: int, prob: float = 1.0) -> None:
        self.tokens.append(token)
        self.probs.append(prob)
        if self.constraint is not None and not self.constraint.done:
            self.constraint.consume(token)
        self.ended = token in self.end_ids

    def needs(self) -> list[int]:
        """Indices (into feed + drafts) whose logits this row needs: before each checked
        forced token, at its last fed token and at each draft."""
        if not self.feed:
            return []
        if self.split:  # part of the feed only: no choice this pass, checks within it
            return [j - 1 for j in self.checks if j <= self.split]
        last = len(self.feed) - 1
        return [j - 1 for j in self.checks] + [last + a for a in range(len(self.drafts) + 1)]

    def choose(
        self, scores: torch.Tensor, wanted: int, probs: np.ndarray | None
    ) -> tuple[int, float]:
        """Greedy choice under the grammar: the model's top token `wanted` when allowed,
        else the top allowed one (an overrule, recorded); with its probability among the
        allowed tokens, from the row's softmax `probs` (None: not scored, 1.0)."""
        c = self.constraint
        if c is None or c.done:
            return wanted, 1.0 if probs is None else float(probs[wanted])
        if c.allows(wanted):
            if probs is None:
                return wanted, 1.0
            return wanted, allowed_prob(probs, wanted, c.allowed_bits(), scores)
        allowed = c.allowed().to(scores.device)
        chosen = int(scores.masked_fill(~allowed, float("-inf")).argmax())
        c.overrule(wanted, chosen)
        if probs is None:
            return chosen, 1.0
        return chosen, allowed_prob(probs, chosen, allowed.cpu().numpy(), scores)


def allowed_prob(probs: np.ndarray, token: int, allowed: np.ndarray, scores: torch.Tensor) -> float:
    """softmax(scores)[token] among the `allowed` tokens only: the probability of the token
    in the distribution greedy decoding chose it from. From the row's softmax (a dot
    product); where every allowed token underflowed there, from the scores themselves."""
    mass = float(np.dot(probs, allowed))
    if mass > 1e-30:
        return float(probs[token]) / mass
    masked = scores.masked_fill(~torch.from_numpy(allowed.astype(bool)).to(scores.device), -1e30)
    return float(torch.exp(masked[token] - torch.logsumexp(masked, 0)))


@functools.cache
def cache_keyword(model_class: type[torch.nn.Module]) -> str:
    """`cache` in transformers >= 5.24 (`past_key_values` is deprecated there), the older
    name before (the GPU image's transformers 5.17); read once per model class."""
    parameters = inspect.signature(model_class.forward).parameters
    return "cache" if "cache" in parameters else "past_key_values"


# What one forward pass costs beyond its tokens, in tokens per row: every pass reads every
# weight once whatever its width. An estimate, not a tuned value (bench/generation.py
# measures the passes and tokens it leads to).
PASS_OVERHEAD_TOKENS = 2.0


def fit_width(gen: Generator, rows: Sequence[Row]) -> None:
    """Shape the next pass: every row pays its widest row's width, so choose the width that
    advances the batch most per token computed, feed longer rows in parts (`split`), cut
    longer drafts, and fill shorter rows' padding with more draft (free speculation)."""
    lengths = [len(r.feed) + len(r.drafts) for r in rows if r.feed]
    if not lengths:
        return
    n = len(rows)

    def rate(w: int) -> float:
        return sum(min(length, w) for length in lengths) / (n * (w + PASS_OVERHEAD_TOKENS))

    width = max(sorted(set(lengths)), key=rate)
    for row in rows:
        if not row.feed:
            continue
        if len(row.feed) > width:
            row.split = width
        elif len(row.feed) + len(row.drafts) > width:
            row.drafts = row.drafts[: width - len(row.feed)]
        elif row.drafter is not None and not row.finished:
            want = min(width - len(row.feed), row.draft_room)
            if want > len(row.drafts):
                row.drafts = row.drafter.draft(row.tokens, want)


def forward(gen: Generator, kv: BatchKV, rows: Sequence[Row]) -> tuple[torch.Tensor, int]:
    """One forward pass of every row's feed and drafts; (hidden states, first new column)."""
    seqs = [r.feed[: r.split] if r.split else r.feed + r.drafts for r in rows]
    width = max(len(s) for s in seqs)
    n, device = len(rows), gen.device
    ids = torch.full((n, width), gen.tokenizer.pad_token_id, dtype=torch.long)
    valid = torch.zeros((n, width), dtype=torch.bool)
    positions = torch.arange(width).repeat(n, 1)
    for b, (row, seq) in enumerate(zip(rows, seqs, strict=True)):
        ids[b, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        valid[b, : len(seq)] = True
        positions[b] += row.length
    base = kv.width
    mask = torch.cat([kv.mask, valid.to(device)], 1)
    base_model = gen.model.base_model
    out = base_model(
        input_ids=ids.to(device),
        attention_mask=mask.long(),
        position_ids=positions.to(device),
        use_cache=True,
        **{cache_keyword(type(base_model)): kv.cache},  # type: ignore[arg-type]
    )
    kv.mask = mask
    return out.last_hidden_state, base


def settle(
    row: Row,
    b: int,
    kv: BatchKV,
    base: int,
    logits: dict[int, tuple[torch.Tensor, int, np.ndarray | None]],
) -> None:
    """Read one row's logits: check its forced tokens, keep the drafts greedy decoding
    confirms, choose its next token (with its probability where the logits carry the row's
    softmax); mask the drafts it did not confirm."""
    fed = row.split or len(row.feed)
    if row.fed_generated:
        row.cols.extend(base + j for j in range(fed))
        first = len(row.tokens) - len(row.feed)  # answer position of feed[0]
        for j in row.checks:
            if j - 1 < fed and row.constraint is not None:
                wanted = logits[j - 1][1]
                if wanted != row.feed[j]:
                    row.constraint.overrule(wanted, row.feed[j], at=first + j)
    if row.split:  # the rest of the feed (and the drafts) go in the next pass
        row.length += fed
        row.feed = row.feed[fed:]
        row.checks = [j - fed for j in row.checks if j > fed]
        row.split = 0
        return
    j, kept = fed - 1, 0
    while True:
        scores, wanted, probs = logits[j]
        choice, prob = row.choose(scores, wanted, probs)
        row.commit(choice, prob)
        confirmed = kept < len(row.drafts) and choice == row.drafts[kept]
        if confirmed:
            row.cols.append(base + fed + kept)
            kept += 1
            j += 1
        if not confirmed or row.finished:
            break
    if kept < len(row.drafts):
        kv.mask[b, base + fed + kept : base + fed + len(row.drafts)] = False
    if row.drafts:  # a draft refused early is a mention being marked: draft less for a while
        row.reach = kept + 1 if kept < len(row.drafts) else 2 * len(row.drafts)
    row.length += fed + kept
    row.checks, row.drafts = [], []
    row.feed = [] if confirmed else [choice]
    row.fed_generated = True


# Rows below which a pass is bound by reading the weights, not by its tokens: fewer rows
# draft longer (a lone request's restatement in two or three passes, not five).
FEW_ROWS = 8


def draft_limit(length: int, rows: int) -> int:
    """How far a row may draft in a batch of `rows`: its drafter's `length`, up to 4x that
    when the batch has fewer than `FEW_ROWS` rows."""
    return min(length * max(1, FEW_ROWS // max(rows, 1)), 4 * length)


def prepare(row: Row, gen: Generator, checked: bool, rows: int) -> None:
    """After a row's choice: append the tokens its grammar forces, then a draft."""
    cfg = gen.cfg
    if cfg.forced_tokens and row.fed_generated and row.feed:
        extend_forced(row, gen.end_ids, checked)
    if row.drafter is not None and not row.finished:
        limit = draft_limit(row.drafter.length, rows)
        reach = min(row.reach or limit, limit)
        if rows < FEW_ROWS:  # a pass reads every weight anyway: a refused draft costs little
            reach = max(reach, row.drafter.length)
        row.drafts = row.drafter.draft(row.tokens, min(reach, row.draft_room))


Logits = dict[int, tuple[torch.Tensor, int, np.ndarray | None]]


def step_logits(gen: Generator, hidden: torch.Tensor, rows: Sequence[Row]) -> list[Logits]:
    """The LM head only where a row chooses or checks a token: per row, index -> (float
    scores, the model's top token, their softmax as numpy when entities are scored: one
    batched softmax per pass, not one per token)."""
    where = [(b, j) for b, row in enumerate(rows) for j in row.needs()]
    per_row: list[Logits] = [{} for _ in rows]
    if not where:
        return per_row
    bs = torch.tensor([b for b, _ in where], device=hidden.device)
    js = torch.tensor([j for _, j in where], device=hidden.device)
    head = gen.model.get_output_embeddings()
    scores = head(hidden[bs, js]).float()
    tops = scores.argmax(-1).tolist()
    probs = torch.softmax(scores, -1).cpu().numpy() if gen.cfg.scores else None
    for k, (b, j) in enumerate(where):
        per_row[b][j] = (scores[k], int(tops[k]), None if probs is None else probs[k])
    return per_row


def advance(gen: Generator, kv: BatchKV, rows: Sequence[Row], checked: bool) -> None:
    """One forward pass of the batch's `rows` (`kv` is their cache): shape it, compute it,
    settle each row's choices and prepare its next feed."""
    fit_width(gen, rows)
    hidden, base = forward(gen, kv, rows)
    logits = step_logits(gen, hidden, rows)
    for b, row in enumerate(rows):
        if row.feed:
            settle(row, b, kv, base, logits[b])
            if not row.finished:
                prepare(row, gen, checked, len(rows))


def read_row(gen: Generator, row: Row) -> Turn:
    """A finished row's answer as read (`answer.read_turn`)."""
    return read_turn(row.tokens, row.budget, gen.end_ids, row.constraint, gen.tokenizer, row.probs)


def prefix_cache(
    gen: Generator, prompts: Sequence[list[int]], prefixes: Sequence[list[int] | None]
) -> tuple[BatchKV, list[int]]:
    """The batch's cache at the start: each row's encoded prefix (rows asked the same
    question share one; several questions are left-padded to the longest), and how many of
    its prompt tokens each row has cached. A row whose prompt does not start with its prefix
    (a tokenizer merging across the boundary) is encoded whole."""
    used = [p if p and q[: len(p)] == p else None for q, p in zip(prompts, prefixes, strict=True)]
    lengths = [len(p) if p else 0 for p in used]
    if not any(used):
        return BatchKV.empty(len(prompts), gen.device), lengths
    first = used[0]
    if first and all(p == first for p in used):
        return BatchKV.repeated(gen.prefixes.keys_values(first), len(prompts)), lengths
    encoded = {tuple(p): gen.prefixes.keys_values(p) for p in used if p}
    layers = next(iter(encoded.values()))
    none = [(k[:, :, :0], v[:, :, :0]) for k, v in layers]
    rows = []
    for p in used:
        kv = encoded[tuple(p)] if p else none
        mask = torch.ones(kv[0][0].shape[2], dtype=torch.bool, device=gen.device)
        rows.append(RowKV([k for k, _ in kv], [v for _, v in kv], mask))
    return BatchKV.merge(rows), lengths


@torch.inference_mode()
def conversation(
    gen: Generator,
    chats: list[list[dict[str, str]]],
    questions: list[list[str]],
    budgets: list[int],
    constraint_for: Callable[[int, int], RowConstraint | None] | None = None,
    drafter_for: Callable[[int, int], Drafter | None] | None = None,
    prefixes: Sequence[list[int] | None] | None = None,
    checked: bool = False,
) -> list[list[Turn]]:
    """Every turn of a batch of conversations (see the module docstring). `prefixes`: per
    row, the prompt tokens it shares with the other sentences asked the same question,
    encoded once (`PrefixCache`); `checked`: the writing counts steered items, so forced
    tokens are checked against the model's choice."""
    n, turns = len(chats), len(questions[0])
    end_ids = frozenset(gen.end_ids)
    for chat, qs in zip(chats, questions, strict=True):
        chat.append({"role": "user", "content": qs[0]})
    prompts = [prompt_ids(gen.tokenizer, c) for c in chats]
    kv, lengths = prefix_cache(gen, prompts, prefixes or [None] * n)
    feeds = [p[length:] for p, length in zip(prompts, lengths, strict=True)]
    results: list[list[Turn]] = [[] for _ in chats]
    for turn in range(turns):
        rows = [
            Row(
                feeds[i],
                lengths[i],
                budgets[i],
                end_ids,
                constraint_for(i, turn) if constraint_for else None,
                drafter_for(i, turn) if drafter_for else None,
            )
            for i in range(n)
        ]
        for row in rows:  # a draft of the answer's first tokens, read with the prompt
            prepare(row, gen, checked, n)
        slots = list(range(n))  # kv row -> conversation
        aside: dict[int, RowKV] = {}
        more = turn + 1 < turns
        while slots:
            advance(gen, kv, [rows[i] for i in slots], checked)
            done = [b for b, i in enumerate(slots) if rows[i].finished]
            if len(done) == len(slots):
                if more:
                    aside.update({slots[b]: kv.take(b) for b in range(len(slots))})
                kv.select([])  # freed before the next turn's cache is built
                break
            if done and gen.cfg.rows_leave:
                if more:
                    aside.update({slots[b]: kv.take(b) for b in done})
                keep = [b for b in range(len(slots)) if b not in done]
                kv.select(keep)
                slots = [slots[b] for b in keep]
            for i in slots:  # finished rows staying in the batch feed nothing
                if rows[i].finished:
                    rows[i].feed, rows[i].drafts, rows[i].checks = [], [], []
        for i, row in enumerate(rows):
            result = read_row(gen, row)
            results[i].append(result)
            chats[i].append({"role": "assistant", "content": result.text})
        if not more:
            break
        for i, row in enumerate(rows):
            answer = results[i][-1].tokens
            cached = min(len(row.cols), len(answer))
            for col in row.cols[cached:]:  # the end token, a tail cut back
                aside[i].mask[col] = False
            next_ids = gen.next_turn_ids(chats[i][:-1], questions[i][turn + 1])
            chats[i].append({"role": "user", "content": questions[i][turn + 1]})
            feeds[i] = answer[cached:] + next_ids
            lengths[i] = row.start + cached
        kv = BatchKV.merge([aside.pop(i) for i in range(n)])
    return results
