"""edgeopt.llm on small random Llama configs: greedy generation equals transformers', token for token."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
import torch

import edgeopt.llm
from edgeopt.errors import InputError, UnsupportedModelError

MAX_LEN, CHUNK = 48, 8


def _llama(seed: int = 0, **over):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = dict(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=2, max_position_embeddings=128, eos_token_id=None, bos_token_id=None,
               pad_token_id=None)
    cfg.update(over)
    m = LlamaForCausalLM(LlamaConfig(**cfg)).eval().requires_grad_(False)
    for p in m.parameters():  # larger weights than the init's: logits far apart, so argmax is not a coin toss
        p.mul_(4.0 if p.dim() > 1 else 1.0)
    return m


def _reference(m, prompt: list[int], n: int) -> list[int]:
    with torch.inference_mode():
        x = torch.tensor([prompt])  # the mask given: generate() would mask the prompt's tokens equal to pad_token_id
        out = m.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=n, min_new_tokens=n, do_sample=False,
                         pad_token_id=0)
    return out[0, len(prompt):].tolist()


@pytest.fixture(scope="module")
def tiny():
    m = _llama()
    return m, edgeopt.llm.compile(m, max_seq_len=MAX_LEN, prefill_len=CHUNK)


@pytest.mark.parametrize("prompt_len", [1, 5, CHUNK, 19])  # one token, a padded chunk, exactly one, three chunks
def test_greedy_tokens_equal_transformers(tiny, prompt_len):
    m, lm = tiny
    prompt = torch.randint(0, 128, (prompt_len,), generator=torch.Generator().manual_seed(prompt_len)).tolist()
    assert lm.generate(prompt, 16) == _reference(m, prompt, 16)
    assert lm.stats["new_tokens"] == 16 and lm.stats["prompt_tokens"] == prompt_len


def test_prompt_whose_last_chunk_would_pass_the_cache_end(tiny):
    m, lm = tiny
    prompt = torch.randint(0, 128, (MAX_LEN - 4,), generator=torch.Generator().manual_seed(7)).tolist()
    assert lm.generate(prompt, 4) == _reference(m, prompt, 4)  # the last chunk starts early, recomputing positions


def test_a_new_prompt_after_a_longer_one_is_not_disturbed_by_the_old_cache(tiny):
    m, lm = tiny
    long = list(range(30))
    short = [5, 9, 2]
    lm.generate(long, 8)
    assert lm.generate(short, 8) == _reference(m, short, 8)


def test_sampling_is_seeded_and_top_k_1_is_greedy(tiny):
    _, lm = tiny
    prompt = [3, 1, 4, 1, 5]
    a = lm.generate(prompt, 12, temperature=1.0, top_k=20, seed=3)
    assert a == lm.generate(prompt, 12, temperature=1.0, top_k=20, seed=3)
    assert a != lm.generate(prompt, 12, temperature=1.0, top_k=20, seed=4)  # 20^12 choices: equal by chance ~never
    assert lm.generate(prompt, 12, temperature=0.7, top_k=1, seed=5) == lm.generate(prompt, 12)


def test_stop_tokens_end_generation(tiny):
    _, lm = tiny
    free = lm.generate([1, 2, 3], 10)
    stop = free[3]
    out = lm.generate([1, 2, 3], 10, stop=[stop])
    assert out == free[: free.index(stop) + 1]


def test_one_artifact_two_functions_one_copy_of_the_weights(tiny, tmp_path):
    m, lm = tiny
    params = sum(p.numel() * 4 for p in m.parameters())
    rope = 2 * MAX_LEN * (64 // 4) * 4  # the cos/sin tables
    assert lm.report["weight_bytes"] <= params + rope
    path = tmp_path / "tiny.edgeopt"
    lm.save(path)
    with zipfile.ZipFile(path) as z:
        manifest = json.loads(z.read("manifest.json"))
        names = z.namelist()
    assert set(manifest["functions"]) == {"prefill_8"} and manifest["llm"]["max_seq_len"] == MAX_LEN
    assert "functions/prefill_8/plan.json" in names and names.count("weights.safetensors") == 1
    assert manifest["inputs"][0]["shape"] == [1, 1]
    assert manifest["functions"]["prefill_8"]["inputs"][0]["shape"] == [1, CHUNK]
    loaded = edgeopt.llm.load(str(path))
    prompt = [7, 7, 1, 0, 3, 9, 11, 2, 4, 6]
    assert loaded.generate(prompt, 10) == _reference(m, prompt, 10)


def test_two_chunk_lengths_pick_the_least_padding():
    m = _llama(seed=2)
    lm = edgeopt.llm.compile(m, max_seq_len=32, prefill_len=(8, 3))
    assert lm.info["prefill_lens"] == [8, 3] and lm.report["weight_bytes"] <= sum(
        p.numel() * 4 for p in m.parameters()) + 2 * 32 * 16 * 4
    r = lm.runtime
    assert [r.chunks_for(n) for n in (20, 8, 7, 3, 1, 11)] == [[8, 8, 8], [8], [8], [3], [3], [8, 3]]
    r.prefill_lens = [32, 8]
    assert [r.chunks_for(n) for n in (37, 12, 25, 45)] == [[32, 8], [8, 8], [32], [32, 8, 8]]
    r.prefill_lens = [8, 3]
    for n in (2, 10, 13, 29):  # 29: the last chunk (3) passes the cache's end and starts early
        prompt = list(range(1, n + 1))
        assert lm.generate(prompt, 32 - n) == _reference(m, prompt, 32 - n), n


def test_kv_cache_is_state_in_the_plan(tiny):
    _, lm = tiny
    plan = lm.compiled.plan
    states = {k: v for k, v in plan["values"].items() if v["kind"] == "state"}
    assert len(states) == 4 and all(v["shape"] == [1, 2, MAX_LEN, 16] for v in states.values())
    assert lm.info["kv_cache_bytes"] == lm.report["state_bytes"] == 4 * 2 * MAX_LEN * 16 * 4
    assert sum(s["kernel"].startswith("index_copy") for s in plan["steps"]) == 4


def test_too_long_a_request_is_an_input_error(tiny):
    _, lm = tiny
    with pytest.raises(InputError, match="max_seq_len"):
        lm.generate(list(range(40)), 10)


def test_unsupported_decoder_is_one_clear_error():
    from transformers import GPT2Config, GPT2LMHeadModel

    m = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=64)).eval()
    with pytest.raises(UnsupportedModelError, match="gpt2"):
        edgeopt.llm.compile(m, max_seq_len=16, prefill_len=4)


def test_prefill_len_must_fit_the_cache():
    with pytest.raises(InputError, match="prefill_len"):
        edgeopt.llm.compile(_llama(), max_seq_len=8, prefill_len=16)


def test_runtime_generate_needs_no_torch(tiny):
    import edgeopt.runtime.generate as gen

    src = open(gen.__file__).read()
    assert "import torch" not in src and "transformers" not in src
    logits = np.zeros(10, np.float32)
    logits[3] = 1
    assert gen._pick(logits, 0.0, None, None) == 3


@pytest.mark.parametrize("quantize", ["int4-weight", "int8-weight"])
def test_weights_from_q4_1_blocks_give_the_same_tokens_quantized(quantize):
    """A model whose weights came from GGUF Q4_1 blocks (q * d + m per 32 inputs; SmolLM2's file) comes back
    exactly from edgeopt.llm's int4 and int8 encodings, so greedy generation equals transformers'. The rotary tables
    (80 positions: large enough to be quantized as an embedding would be) stay float."""
    from edgeopt.ir.ops.quant import _dequantize_ref
    from edgeopt.quant.weights import affine_groups

    m = _llama(seed=5, intermediate_size=128)
    with torch.no_grad():
        for p in m.parameters():
            if p.dim() == 2:
                q, s, lo = affine_groups(p.numpy(), 1, 32, 4)
                back = _dequantize_ref([q, s, lo], {"bits": 4, "group_size": 32, "group_axis": 1})[0]
                p.copy_(torch.from_numpy(back))
    lm = edgeopt.llm.compile(m, max_seq_len=80, prefill_len=(8, 3), quantize=quantize)
    kept = lm.report["quantization"]["kept_float"]
    assert len(kept) == 2 and all("keep_float" in k for k in kept)  # cos and sin
    for prompt in ([1, 2, 3], list(range(40, 60))):
        assert lm.generate(prompt, 24) == _reference(m, prompt, 24)


def test_token_ids_outside_the_vocabulary_and_other_threads(tiny):
    import threading

    m, lm = tiny
    with pytest.raises(InputError, match="token ids"):
        lm.generate([1, 500], 3)
    r = lm.runtime
    r.prefill([4, 5, 6])
    seen = []

    def other():  # another thread has its own (empty) cache: continuing the first thread's sequence is refused
        try:
            r.prefill([7], start=3)
        except InputError as e:
            seen.append(str(e))

    t = threading.Thread(target=other)
    t.start()
    t.join()
    assert seen and "this thread" in seen[0]
    assert r.prefill([7], start=3) is not None  # this thread's cache holds the 3 positions
