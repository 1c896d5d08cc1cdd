"""A Llama-family decoder step as a plain torch module, with its KV cache held in buffers.

``DecoderStep(hf_model, max_seq_len)`` reads the weights of a transformers ``LlamaForCausalLM`` (Llama, SmolLM,
Mistral without sliding windows...) and computes, for ``T`` new tokens at cache positions ``cache_position``,
the logits of each, writing their keys and values into the cache buffers in place (``index_copy_``). Exported
with ``torch.export`` this is a graph whose cache buffers are mutated: the frontend turns them into IR state
that the runtime keeps between calls, shared by the prefill and the decode functions.

Written out (not traced from transformers' own modules) so that the graph is the one an edge runtime wants:
grouped-query attention without copying the keys per query head (the ``G`` query heads of one KV head are
folded into the rows of one attention), the rotary tables precomputed for ``max_seq_len`` positions, and no
mask machinery: key ``j`` is visible to the token at position ``p`` when ``j <= p``.
"""

from __future__ import annotations

import torch
from torch import nn


class DecoderStep(nn.Module):
    """``forward(input_ids [1, T] int64, cache_position [T] int64) -> logits [1, T, vocab]``."""

    def __init__(self, hf_model, max_seq_len: int):
        super().__init__()
        cfg = hf_model.config
        check_supported(cfg)
        base = hf_model.model
        self.embed = base.embed_tokens
        self.layers = base.layers
        self.norm = base.norm
        self.lm_head = hf_model.lm_head
        self.heads = cfg.num_attention_heads
        self.kv_heads = cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        self.max_seq_len = max_seq_len
        rot = base.rotary_emb
        pos = torch.arange(max_seq_len, dtype=torch.float32)
        freqs = pos[:, None] * rot.inv_freq.float()[None, :]  # as transformers computes them, in float32
        emb = torch.cat((freqs, freqs), dim=-1)
        self.register_buffer("cos", emb.cos() * rot.attention_scaling, persistent=False)
        self.register_buffer("sin", emb.sin() * rot.attention_scaling, persistent=False)
        shape = (1, self.kv_heads, max_seq_len, self.head_dim)
        for i in range(len(self.layers)):
            self.register_buffer(f"k_cache_{i}", torch.zeros(shape), persistent=False)
            self.register_buffer(f"v_cache_{i}", torch.zeros(shape), persistent=False)

    def forward(self, input_ids: torch.Tensor, cache_position: torch.Tensor) -> torch.Tensor:
        t = input_ids.shape[1]
        x = self.embed(input_ids)
        cos = self.cos.index_select(0, cache_position)[None, None]  # [1, 1, T, D]
        sin = self.sin.index_select(0, cache_position)[None, None]
        groups = self.heads // self.kv_heads
        keys = torch.arange(self.max_seq_len, device=input_ids.device)
        visible = (keys[None, :] <= cache_position[:, None]).repeat(groups, 1)  # [G*T, S]
        for i, layer in enumerate(self.layers):
            attn = layer.self_attn
            h = layer.input_layernorm(x)
            q = attn.q_proj(h).view(1, t, self.heads, self.head_dim).transpose(1, 2)
            k = attn.k_proj(h).view(1, t, self.kv_heads, self.head_dim).transpose(1, 2)
            v = attn.v_proj(h).view(1, t, self.kv_heads, self.head_dim).transpose(1, 2)
            q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
            k_all = getattr(self, f"k_cache_{i}")
            v_all = getattr(self, f"v_cache_{i}")
            k_all.index_copy_(2, cache_position, k)
            v_all.index_copy_(2, cache_position, v)
            # the G query heads of a KV head as G*T rows of one attention over that head's keys
            q = q.reshape(1, self.kv_heads, groups * t, self.head_dim)
            o = nn.functional.scaled_dot_product_attention(q, k_all, v_all, attn_mask=visible,
                                                           scale=attn.scaling)
            o = o.reshape(1, self.heads, t, self.head_dim).transpose(1, 2).reshape(1, t, -1)
            x = x + attn.o_proj(o)
            x = x + layer.mlp(layer.post_attention_layernorm(x))
        return self.lm_head(self.norm(x))


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


SUPPORTED = ("LlamaForCausalLM", "MistralForCausalLM")


def check_supported(cfg) -> None:
    """``UnsupportedModelError`` naming what this decoder does not implement."""
    from ..errors import UnsupportedModelError

    archs = getattr(cfg, "architectures", None) or [getattr(cfg, "model_type", "?")]
    problems = []
    if cfg.model_type not in ("llama", "mistral"):
        problems.append(f"architecture {cfg.model_type!r} (supported: {', '.join(SUPPORTED)})")
    if getattr(cfg, "attention_bias", False) or getattr(cfg, "mlp_bias", False):
        problems.append("biases in attention or MLP projections")
    if getattr(cfg, "sliding_window", None):
        problems.append(f"sliding-window attention (window {cfg.sliding_window})")
    if getattr(cfg, "hidden_act", "silu") != "silu":
        problems.append(f"activation {cfg.hidden_act!r}")
    if problems:
        raise UnsupportedModelError(f"edgeopt.llm cannot compile this {archs[0]}: " + "; ".join(problems))
