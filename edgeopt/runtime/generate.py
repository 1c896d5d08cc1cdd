"""Text generation with a compiled language model: prefill the prompt, then decode one token at a time.

An LLM artifact (``edgeopt.llm.compile``) has several functions over one KV cache (the artifact's states):
``decode`` (the artifact's own plan: one token) and ``prefill_<n>`` for each chunk length ``n`` (``prefill_lens``).
Each takes tokens and their cache positions and returns logits, writing the tokens' keys and values into the cache
at those positions.

Prefill runs the prompt in chunks of the compiled lengths, the fewest padded rows (``chunks_for``). A chunk that
would pass the cache's end starts early enough to end inside it, recomputing positions already there (the same
values).
Padding tokens write garbage keys at positions after the prompt: harmless, since the token at a position writes its
own keys there before anything attends to them, and a token attends only to positions up to its own.

Imports numpy and the runtime only: it runs on the device.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

import numpy as np

from ..errors import InputError
from .model import Model

#: what one prefill call costs beyond its rows, in rows: measured on SmolLM2-135M int4 (2 Zen 4 cores), an 8-token
#: chunk takes 18 ms and a 32-token one 63 ms, about 3.5 ms + 1.9 ms a row (bench/llm_chunks.py)
CALL_ROWS = 2


class LanguageModel:
    """A loaded LLM artifact: ``generate`` token ids, or call ``prefill`` / ``decode`` yourself."""

    def __init__(self, model: Model):
        info = model.manifest.get("llm")
        if not isinstance(info, dict) or not info.get("prefill_lens"):
            raise InputError("this artifact is not a language model (compile one with edgeopt.llm.compile)")
        self.model = model
        self.info = info
        self.max_seq_len = int(info["max_seq_len"])
        self.prefill_lens = sorted((int(n) for n in info["prefill_lens"]), reverse=True)
        try:
            self._prefill = {n: model.functions[f"prefill_{n}"] for n in self.prefill_lens}
        except KeyError as e:
            raise InputError(f"the artifact lacks the prefill function {e} its manifest lists (damaged)") from None
        self.vocab_size = int(info["vocab_size"])
        eos = info.get("eos_token_id")
        self.eos_token_ids = [] if eos is None else [int(e) for e in (eos if isinstance(eos, list) else [eos])]
        self._history = (None, np.zeros(0, np.int64))  # (thread, the tokens in its cache by position)
        self.stats: dict = {}

    # -- text (needs the tokenizers and jinja2 packages, not torch) ---------------------------------------
    @property
    def tokenizer(self):
        """The ``tokenizers.Tokenizer`` stored in the artifact (``edgeopt.llm.compile(..., tokenizer=)``)."""
        if getattr(self, "_tokenizer", None) is None:
            data = self.model.extras.get(self.info.get("tokenizer") or "")
            if data is None:
                raise InputError("this artifact has no tokenizer: compile with edgeopt.llm.compile(..., tokenizer=tok)")
            from tokenizers import Tokenizer

            self._tokenizer = Tokenizer.from_str(data.decode())
        return self._tokenizer

    def chat_ids(self, text: str, chat: bool = True) -> list[int]:
        """Token ids of a user message in the model's chat template (``chat=False``: of the text as it is)."""
        template = self.info.get("chat_template")
        if chat and template:
            from jinja2.sandbox import ImmutableSandboxedEnvironment  # the template comes from the artifact

            env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
            text = env.from_string(template).render(messages=[{"role": "user", "content": text}],
                                                    add_generation_prompt=True, **self.info.get("special_tokens", {}))
        return self.tokenizer.encode(text, add_special_tokens=not (chat and template)).ids

    def chat(self, text: str, max_new_tokens: int = 64, *, on_text: Callable[[str], None] | None = None,
             chat: bool = True, **kwargs) -> str:
        """The model's reply to ``text``; ``on_text`` gets the reply's text piece by piece as it is generated."""
        ids: list[int] = []
        shown = ""

        def on_token(tok: int) -> None:
            nonlocal shown
            ids.append(tok)
            now = self.tokenizer.decode(ids, skip_special_tokens=True)
            if on_text is not None and now.startswith(shown) and len(now) > len(shown):
                on_text(now[len(shown):])
                shown = now

        self.generate(self.chat_ids(text, chat), max_new_tokens, on_token=on_token, **kwargs)
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    # -- tokens ------------------------------------------------------------------------------------------
    def prefill(self, ids: Sequence[int], start: int = 0) -> np.ndarray:
        """Run ``ids`` at positions ``start...`` (the cache holds the positions before); returns the logits of the
        last one."""
        ids = np.asarray(ids, np.int64).reshape(-1)
        end = start + len(ids)
        held = len(self._thread_history())
        if len(ids) == 0 or start < 0 or end > self.max_seq_len or start > held:
            raise InputError(f"{len(ids)} tokens at position {start}: the model holds 1..{self.max_seq_len} "
                             f"positions and has {held} in this thread's cache")
        self._check_ids(ids)
        history = self._thread_history()
        seq = np.concatenate([history[:start], ids])
        logits, pos = None, start
        for p in self.chunks_for(len(ids)):
            if pos >= end:  # a chunk that had to start early (at the cache's end) took the rest
                break
            first = min(pos, self.max_seq_len - p)  # a chunk ends inside the cache: it may start early, recomputing
            real = min(first + p, end) - first
            chunk = np.zeros((1, p), np.int64)
            chunk[0, :real] = seq[first:first + real]
            out = self._prefill[p](chunk, np.arange(first, first + p, dtype=np.int64))
            logits, pos = out[0, real - 1], first + real
        self._history = (threading.get_ident(), seq)
        return logits

    def _thread_history(self) -> np.ndarray:
        """The tokens in this thread's KV cache (each thread has its own cache: ``Model.state``)."""
        owner, tokens = self._history
        return tokens if owner == threading.get_ident() else np.zeros(0, np.int64)

    def _check_ids(self, ids: np.ndarray) -> None:
        if ids.size and (ids.min() < 0 or ids.max() >= self.vocab_size):
            raise InputError(f"token ids must be in 0..{self.vocab_size - 1}, got {ids.min()}..{ids.max()}")

    def chunks_for(self, n: int) -> list[int]:
        """The prefill chunks for ``n`` tokens, largest first: the fewest padded rows, counting each call as
        ``CALL_ROWS`` more (it reads every weight once). With chunks (32, 8): 37 tokens run as 32 + 8, 12 as 8 + 8,
        25 as 32."""
        best: list[tuple[float, list[int]]] = [(0.0, [])]
        for r in range(1, n + 1):
            best.append(min(((c + CALL_ROWS + best[max(0, r - c)][0], [c] + best[max(0, r - c)][1])
                             for c in self.prefill_lens), key=lambda t: t[0]))
        return sorted(best[n][1], reverse=True)

    def decode(self, token: int, position: int) -> np.ndarray:
        """The logits after ``token`` at ``position`` (the cache holds every position before it)."""
        history = self._thread_history()
        if not 0 <= position < self.max_seq_len or position > len(history):
            raise InputError(f"position {position}: the cache holds {self.max_seq_len} positions and has "
                             f"{len(history)} in this thread's")
        self._check_ids(np.array([token]))
        self._history = (threading.get_ident(), np.concatenate([history[:position], [token]]))
        return self.model(np.array([[token]], np.int64), np.array([position], np.int64))[0, -1]

    def generate(self, prompt_ids: Sequence[int], max_new_tokens: int = 32, *, temperature: float = 0.0,
                 top_k: int | None = None, seed: int | None = None, stop: Sequence[int] | None = None,
                 on_token: Callable[[int], None] | None = None) -> list[int]:
        """New token ids after ``prompt_ids``: greedy (``temperature=0``, the default) or sampled from the softmax at
        ``temperature`` over the ``top_k`` most likely tokens. Stops after ``max_new_tokens`` or at a token of
        ``stop`` (default: the model's end-of-sequence token), which is returned. ``on_token`` sees each token as it
        is made (print text as it comes). ``stats`` then holds the time to first token and decode tokens/s."""
        prompt = np.asarray(prompt_ids, np.int64).reshape(-1)
        if len(prompt) + max_new_tokens - 1 > self.max_seq_len:  # the last new token is not run through the model
            raise InputError(f"{len(prompt)} prompt tokens + {max_new_tokens} new ones exceed the compiled "
                             f"max_seq_len of {self.max_seq_len}")
        stop = set(self.eos_token_ids if stop is None else stop)
        rng = np.random.default_rng(seed)
        t0 = time.perf_counter()
        logits = self.prefill(prompt)
        out: list[int] = []
        t1 = None
        for i in range(max_new_tokens):
            tok = _pick(logits, temperature, top_k, rng)
            out.append(tok)
            if on_token is not None:
                on_token(tok)
            if t1 is None:
                t1 = time.perf_counter()
            if tok in stop or i == max_new_tokens - 1:
                break
            logits = self.decode(tok, len(prompt) + i)
        t2 = time.perf_counter()
        steps = len(out) - 1
        self.stats = {"prompt_tokens": len(prompt), "new_tokens": len(out), "ttft_s": (t1 or t2) - t0,
                      "decode_tokens_per_s": steps / (t2 - t1) if steps and t1 else None}
        return out


def _pick(logits: np.ndarray, temperature: float, top_k: int | None, rng) -> int:
    if temperature <= 0:
        return int(np.argmax(logits))
    z = logits.astype(np.float64) / temperature
    if top_k is not None and 0 < top_k < len(z):
        cut = np.partition(z, -top_k)[-top_k]
        z = np.where(z >= cut, z, -np.inf)
    p = np.exp(z - z.max())
    return int(rng.choice(len(p), p=p / p.sum()))


def load_llm(path: str, **kwargs) -> LanguageModel:
    """Load an LLM artifact (``edgeopt.llm.compile(...).save(path)``); ``kwargs``: as for ``edgeopt.load``."""
    from .model import load

    return LanguageModel(load(path, **kwargs))
