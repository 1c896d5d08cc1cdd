"""Language models: compile a transformers decoder into prefill and decode functions over one KV cache.

    lm = edgeopt.llm.compile(hf_model, max_seq_len=256, prefill_len=32, target="host")
    new_ids = lm.generate(prompt_ids, max_new_tokens=32)          # greedy; temperature=, top_k= to sample
    lm.save("smollm.edgeopt"); edgeopt.llm.load("smollm.edgeopt")  # runs without torch
"""

from ..runtime.generate import LanguageModel
from ..runtime.generate import load_llm as load
from .compile import CompiledLLM, compile

__all__ = ["CompiledLLM", "LanguageModel", "compile", "load"]
