"""``edgeopt.llm.compile``: a decoder LM as one artifact with several functions over one KV cache.

``decode`` (one token, the artifact's own plan) and ``prefill_<n>`` (``n`` tokens, for each ``n`` of
``prefill_len``) are graphs traced from the same ``DecoderStep``: the KV cache buffers it updates in place become
the graphs' states (``Graph.states``), which the runtime allocates once and every function uses; the weights are
stored once.

Why padded chunks instead of symbolic sequence lengths: a prompt of any length runs as chunks of the compiled
lengths (the last one padded, ``edgeopt.runtime.generate``), so a few sets of kernels cover every length with the
shapes static, each scheduled for its size. Two chunk lengths (32 and 8 by default) keep the padding small: a
37-token prompt computes 40 rows, not 64 (measured on SmolLM2-135M: see docs/llm.md). Attention always spans the
whole cache (``max_seq_len`` keys, masked by position): for the small models that run on edge CPUs it is a small
share of a step (SmolLM2-135M at 256 positions: about 5% of the decode step's multiply-adds), against kernels
specialized to one shape.
"""

from __future__ import annotations

import time

import torch

from ..api import CompiledModel, compile_graph
from ..errors import InputError
from ..frontend import from_torch
from ..runtime.generate import LanguageModel
from .decoder import DecoderStep

#: the layers "int4-weight" keeps at 8 bits (source-line fragments of ``DecoderStep``): the logits' projection and
#: the embedding it is tied to in small models
OUTPUT_LAYERS = ("self.lm_head(", "self.embed(")


#: the rotary cos/sin tables are gathered like an embedding but are not weights: they stay float
ROTARY_TABLES = ("self.cos.index_select(", "self.sin.index_select(")


class CompiledLLM:
    """A compiled language model: ``generate`` here, ``save`` for the device (``edgeopt.llm.load`` there)."""

    def __init__(self, compiled: CompiledModel, info: dict):
        self.compiled = compiled
        self.info = info
        self.report = compiled.report
        self._lm = None

    @property
    def runtime(self) -> LanguageModel:
        if self._lm is None:
            self._lm = LanguageModel(self.compiled._runtime_model())
        return self._lm

    def generate(self, prompt_ids, max_new_tokens: int = 32, **kwargs) -> list[int]:
        """See ``edgeopt.runtime.generate.LanguageModel.generate``."""
        return self.runtime.generate(prompt_ids, max_new_tokens, **kwargs)

    @property
    def stats(self) -> dict:
        return self.runtime.stats

    def save(self, path) -> None:
        self.compiled.save(path)

    def __repr__(self) -> str:
        return (f"<CompiledLLM {self.info['architecture']} max_seq_len={self.info['max_seq_len']} "
                f"prefill_lens={self.info['prefill_lens']} target={self.report['target']}>")


def compile(hf_model, *, max_seq_len: int = 256, prefill_len: int | tuple[int, ...] = (32, 8), target="host",
            quantize=None,
            opt_level: int = 2, tokenizer=None, **target_options) -> CompiledLLM:
    """Compile a transformers causal LM (Llama family: Llama, SmolLM, Mistral without sliding windows) for
    sequences of up to ``max_seq_len`` tokens (the KV cache's length), running prompts in chunks of the
    ``prefill_len`` lengths (one or several).
    ``quantize``: as for ``edgeopt.compile``; the weight-only modes suit LLM decoding. Here "int8-weight" means groups
    of 32 inputs, each with a scale (and a minimum where that is closer: ``QuantConfig(weights="per-group")``), so
    models shipped in GGUF's 32-element block formats (Q4_1, Q8_0) come back exactly; "int4-weight" keeps the
    embedding and the output projection at 8 bits (``keep_int8``), as llama.cpp's 4-bit formats do.
    ``tokenizer`` (a transformers fast tokenizer) is stored in the artifact (``tokenizer.json`` and the chat
    template): ``edgeopt generate model.edgeopt "prompt"`` and ``LanguageModel.chat`` then need only the small
    ``tokenizers`` and ``jinja2`` packages on the device."""
    from ..targets import get_target

    if quantize in ("int8-weight", "int4-weight"):
        from ..quant import QuantConfig

        quantize = QuantConfig(mode=quantize, weights="per-group", keep_int8=OUTPUT_LAYERS, keep_float=ROTARY_TABLES)
    lens = sorted({int(n) for n in ((prefill_len,) if isinstance(prefill_len, int) else prefill_len)}, reverse=True)
    if not lens or not all(1 <= n <= max_seq_len for n in lens):
        raise InputError(f"prefill_len must be in 1..max_seq_len ({max_seq_len}), got {prefill_len}")
    t0 = time.perf_counter()
    step = DecoderStep(hf_model, max_seq_len).eval()
    decode = from_torch(step, (torch.zeros(1, 1, dtype=torch.long), torch.zeros(1, dtype=torch.long)),
                        name="decode", state=True)
    prefill = {f"prefill_{n}": from_torch(step, (torch.zeros(1, n, dtype=torch.long), torch.arange(n)),
                                          name=f"prefill_{n}", state=True) for n in lens}
    cfg = hf_model.config
    gen = getattr(hf_model, "generation_config", None)
    eos = getattr(gen, "eos_token_id", None) if gen is not None else None
    eos = cfg.eos_token_id if eos is None else eos
    info = {"architecture": type(hf_model).__name__, "max_seq_len": max_seq_len, "prefill_lens": lens,
            "vocab_size": int(cfg.vocab_size), "eos_token_id": eos, "layers": int(cfg.num_hidden_layers),
            "kv_cache_bytes": int(sum(v.type.nbytes for v in decode.states))}
    members = {}
    if tokenizer is not None:
        members["tokenizer.json"] = tokenizer.backend_tokenizer.to_str().encode()
        info["tokenizer"] = "tokenizer.json"
        info["chat_template"] = getattr(tokenizer, "chat_template", None)
        info["special_tokens"] = {k: str(getattr(tokenizer, k)) for k in ("bos_token", "eos_token")
                                  if getattr(tokenizer, k, None) is not None}
    compiled = compile_graph(decode, get_target(target, **target_options), opt_level=opt_level, quantize=quantize,
                             frontend_seconds=time.perf_counter() - t0, functions=prefill,
                             manifest_extra={"llm": info}, extra_members=members)
    return CompiledLLM(compiled, info)
