"""Language models: compile a transformers decoder into prefill and decode functions over one KV cache.

    lm = edgeopt.llm.compile(hf_model, max_seq_len=256, prefill_len=(32, 8), target="host")
    new_ids = lm.generate(prompt_ids, max_new_tokens=32)          # greedy; temperature=, top_k= to sample
    lm.save("smollm.edgeopt"); edgeopt.llm.load("smollm.edgeopt")  # runs without torch

``load`` and ``LanguageModel`` need only the runtime; ``compile`` (torch, the compiler) is imported when used.
"""

from ..runtime.generate import LanguageModel
from ..runtime.generate import load_llm as load

__all__ = ["CompiledLLM", "LanguageModel", "compile", "load"]


def __getattr__(name: str):
    if name in ("compile", "CompiledLLM"):
        from importlib import import_module

        return getattr(import_module(f"{__name__}.compiler"), name)
    raise AttributeError(f"module 'edgeopt.llm' has no attribute {name!r}")
