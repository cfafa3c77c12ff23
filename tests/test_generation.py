"""Batched greedy generation: a conversation's later turns continue from the tokens the model
wrote, and reusing the KV cache for them changes nothing but the cost (real HF generate on a
tiny-llama whose weights are redrawn large, so that what it writes depends on its context:
with the default small init it repeats one token whatever it reads)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import write_noise_model
from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantizedLinear

from biogner.corpora import load_split
from biogner.generation import Generator
from biogner.generation.packed import PackedLinear, available, packed_dtypes
from biogner.generation.quantize import quantize
from biogner.models.config import GenerationConfig

TYPES = ["Chemical", "Disease"]


@pytest.fixture(scope="module")
def sentences(data_dir):
    return load_split("BC5CDR", "dev", data_dir, limit=10)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_noise_model(tmp_path_factory.mktemp("chaotic-tiny"), seed=0)


@pytest.fixture(scope="module")
def generator(model_dir: Path):
    def make(**settings) -> Generator:
        cfg = GenerationConfig(device="cpu", dtype="float32", max_new_tokens_cap=10, **settings)
        return Generator(model_dir, cfg)

    return make


@pytest.mark.parametrize("constrained", [False, True])
@pytest.mark.parametrize("fmt", ["conv_term", "conv_triple"])
def test_kv_cache_reuse_gives_the_same_answers_as_reencoding(
    sentences, generator, fmt, constrained
) -> None:
    """Also under constraint, where an answer cut by its budget is cut back (its tail stays
    in the cache, masked)."""
    cfg = {"batch_size": 4, "constrained": constrained}
    cached = generator(reuse_kv_cache=True, **cfg).extract(sentences, fmt, TYPES)
    recomputed = generator(reuse_kv_cache=False, **cfg).extract(sentences, fmt, TYPES)
    assert [g.answer_tokens for g in cached] == [g.answer_tokens for g in recomputed]
    assert [g.answers for g in cached] == [g.answers for g in recomputed]
    assert all(len(g.answer_tokens) == len(TYPES) for g in cached)  # a turn per type
    second = {tuple(g.answer_tokens[1]) for g in cached}
    assert len(second) > 1  # real, varied second-turn output
    assert constrained or all(second)


def test_answers_do_not_depend_on_the_batch(sentences, generator) -> None:
    """Left padding, masked end tokens and the padding between turns leave each row's
    positions those of its conversation alone: a batch of 4 answers as one at a time."""
    batched = generator(batch_size=4, constrained=False).extract(sentences, "conv_term", TYPES)
    alone = generator(batch_size=1, constrained=False).extract(sentences, "conv_term", TYPES)
    assert [g.answer_tokens for g in batched] == [g.answer_tokens for g in alone]


@pytest.mark.parametrize(("actors", "threads"), [(1, None), (2, None), (1, 1)])
def test_an_evaluation_actor_computes_on_the_nodes_cores(
    ray_session, model_dir: Path, actors: int, threads: int | None
) -> None:
    """Ray starts an actor of one logical CPU with OMP_NUM_THREADS=1: without setting torch's
    threads, evaluation generated on one core of the node's two (1.5 vs 2.1 sentences/s)."""
    from biogner.evaluate.runner import ExtractActor
    from biogner.runtime import cpu_threads

    gen = GenerationConfig(device="cpu", dtype="float32", threads=threads).model_dump()
    actor = ray_session.remote(num_cpus=1)(ExtractActor).remote(
        str(model_dir), "conv_term", TYPES, gen, actors
    )
    try:
        used = ray_session.get(actor.__ray_call__.remote(lambda self: torch.get_num_threads()))
    finally:
        ray_session.kill(actor)
    assert used == (threads or cpu_threads(actors))


@pytest.mark.parametrize("num_actors", [1, 2, 4])
@pytest.mark.parametrize("sentences", [1, 3, 4, 50, 127, 128, 940])
def test_an_evaluation_starts_no_actor_without_work(sentences: int, num_actors: int) -> None:
    from biogner.evaluate.runner import actor_plan

    rows, blocks, actors = actor_plan(sentences, 64, num_actors)
    assert 1 <= rows <= 64 and 1 <= actors <= min(num_actors, blocks)
    assert blocks * rows <= sentences < (blocks + 1) * rows  # from_items' even split
    # every requested actor works once the split has a sentence for each
    assert actors == min(num_actors, sentences)
    if sentences >= 64 * num_actors:  # a large split keeps its 64-row tasks
        assert rows == 64


def test_int8_generation_is_an_option_for_fp32_models(sentences, model_dir: Path) -> None:
    """`generation.quantize: int8` replaces the body's Linear layers by dynamically quantized
    ones, their weights rounded per output channel, keeps the LM head in fp32, and still
    decodes under the grammar; a bf16 model is refused with the key named."""
    cfg = GenerationConfig(
        device="cpu", dtype="float32", quantize="int8", max_new_tokens_cap=12, batch_size=4
    )
    gen = Generator(model_dir, cfg)
    quantized = [m for m in gen.model.modules() if isinstance(m, DynamicQuantizedLinear)]
    layers = gen.model.config.num_hidden_layers
    assert len(quantized) == 7 * layers  # q, k, v, o, gate, up, down: all but the head
    assert {m.weight().qscheme() for m in quantized} == {torch.per_channel_affine}
    head = gen.model.get_output_embeddings()
    assert not isinstance(head, DynamicQuantizedLinear)
    assert isinstance(head, PackedLinear) is (torch.float32 in packed_dtypes() and available())
    out = gen.extract(sentences[:4], "multi_triple", TYPES)
    assert all(g.parse.problems == [] for g in out)  # constrained answers parse
    with pytest.raises(ValueError, match="generation.quantize"):
        Generator(model_dir, cfg.model_copy(update={"dtype": "bfloat16"}))
    # the refusal on another device names that device (the message once printed "{device}")
    with pytest.raises(ValueError, match=r"device is cuda\)"):
        quantize(gen.model, "int8", torch.device("cuda"))
