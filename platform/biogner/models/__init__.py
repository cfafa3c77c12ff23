"""Models, one module per job: `config` (ModelConfig, GenerationConfig: no torch), `cache`
(built and converted models, written once under a lock), `gguf` (GGUF -> HF conversion),
`builtin` (the tiny-llama recipe), `load` (spec resolution, tokenizer, model, dtype, LoRA).

Nothing is imported here, so `biogner.models.config` stays light."""
