"""tiny-llama: a randomly initialised Llama of a few hundred thousand parameters with a
byte-level BPE tokenizer trained on the text it is given, built deterministically so that every
process (every Ray worker) gets the same weights and vocabulary. It serves tests and `demo
--tiny`; its vocabulary text is passed in (`biogner.models.load` gives it a corpus's train
split when one is on disk), so building it reads no corpus.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from biogner.models.cache import cached_build
from biogner.models.config import TINY_LLAMA

# Bump when the tiny-llama recipe changes: cached builds of an older recipe are then ignored.
TINY_RECIPE_VERSION = 1
# ChatML, as SmolLM2 writes it but without a default system prompt.
CHATML_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)
TINY_VOCAB_SIZE = 2000
TINY_SEED = 0
TINY_SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>")
TINY_ARCH: dict[str, Any] = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 2048,
    "rms_norm_eps": 1e-5,
    "tie_word_embeddings": True,
}
# Used when no corpus is on disk: biomedical prose plus the words and punctuation that the
# prompts and output formats write, so the vocabulary covers them either way.
FALLBACK_TEXT = """\
Identification of APC2 , a homologue of the adenomatous polyposis coli tumour suppressor .
The adenomatous polyposis coli ( APC ) tumour - suppressor protein controls the Wnt signalling.
Germline mutations of BRCA1 and BRCA2 predispose to breast and ovarian cancer .
Myotonic dystrophy ( DM ) is associated with a CTG repeat expansion in the DMPK gene .
Naloxone reverses the antihypertensive effect of clonidine in hypertensive rats .
Lidocaine - induced cardiac asystole was observed after intravenous injection .
Chronic lymphocytic leukemia cells express CD5 and CD23 ; IL - 2 receptor alpha is induced .
Escherichia coli , Saccharomyces cerevisiae , mice and humans were studied in the cohort .
Extract the biomedical named entities of type Disease , Chemical , GENE , Species from the text .
What describes Disease in the text ? Answer with a list of mentions , one per line .
Text : {"text": "cancer", "type": "Disease"} [ colon cancer | Disease ] ("BRCA1", "GENE", 1)
B-Disease I-Disease O B-Chemical I-Chemical B-GENE B-Species B-protein B-DNA B-RNA B-cell_type
None . No entity . 0 1 2 3 4 5 6 7 8 9 10 % < > = + - * / \\ | _ ~ ` ' " ; : , . ! ? @ # $ & ^
"""


def _build_tiny_tokenizer(lines: Sequence[str]) -> Any:
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TINY_VOCAB_SIZE,
        min_frequency=2,
        special_tokens=list(TINY_SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(lines, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="<|endoftext|>",
        eos_token="<|im_end|>",
        pad_token="<|pad|>",
        unk_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>"],
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


def _build_tiny(out: Path, lines: Sequence[str]) -> None:
    tokenizer = _build_tiny_tokenizer(lines)
    ids = {tok: tokenizer.convert_tokens_to_ids(tok) for tok in TINY_SPECIAL_TOKENS}
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|pad|>"],
        **TINY_ARCH,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_SEED)
        model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
    )
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def tiny_dir(root: Path, lines: Sequence[str], origin: str) -> Path:
    """The tiny-llama built from `lines` (named `origin` in its build marker), built once."""
    digest = hashlib.sha256()
    digest.update(json.dumps([TINY_RECIPE_VERSION, TINY_ARCH, TINY_VOCAB_SIZE, TINY_SEED]).encode())
    digest.update("\n".join(lines).encode())
    target = root / f"{TINY_LLAMA}-{digest.hexdigest()[:12]}"
    source = {"recipe": TINY_RECIPE_VERSION, "text": origin, "lines": len(lines)}
    return cached_build(target, lambda out: _build_tiny(out, lines), source)
