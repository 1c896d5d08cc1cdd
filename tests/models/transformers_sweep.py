"""A sweep of Hugging Face transformers architectures with tiny random configs (issue 22).

Every entry builds a transformers model from its ``*Config`` class (random weights, ``torch.manual_seed(0)``,
eval mode; nothing is downloaded) with a tiny config: hidden 32, 2 layers, 4 heads, intermediate 64, vocab 256,
sequences of 16 tokens, images of 32-64 px, audio of 1600 samples. The model is wrapped in ``_Wrap`` so that
``forward`` takes plain tensors (positionally) and returns a tensor or a tuple of tensors, which is what
``torch.export`` and ``edgeopt.compile`` see.

``build(name) -> (module, example_inputs)``; ``SWEEP`` maps each name to its ``Arch`` (family, model class, the
attention implementation it uses, the inputs it takes and the outputs it returns).

Choices:

- Text encoders take ``(input_ids, attention_mask)`` with the last 4 of the 16 positions padded (the mask path is
  exercised); decoders take ``input_ids`` only (the causal mask is made inside) and run ``*ForCausalLM`` with
  ``use_cache=False`` (the logits users deploy); encoder-decoders take ``(input_ids, attention_mask,
  decoder_input_ids)`` for one full forward.
- ``attn_implementation`` is "sdpa" (transformers' default, what deployments run) wherever the model supports it,
  else "eager"; ``Arch.attn`` records which one.
- Ids are drawn from ``[4, vocab)`` so that no id is a pad/bos/eos token (models that treat pads specially, e.g.
  RoBERTa's position ids, see ordinary text).
- Models with BatchNorm get calibrated running statistics (``_calibrate_batchnorm``): random-init convnets
  otherwise output ~1e-30 and the comparison would be vacuous.
- Mixture-of-experts decoders use ``experts_implementation="batched_mm"`` (static shapes) except ``qwen2_moe``,
  which keeps transformers' default ``"grouped_mm"`` so that its gap stays visible; ``"eager"`` experts loop over
  the experts that were hit (``nonzero``): data-dependent, no static graph.
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from dataclasses import dataclass, field

import torch
from torch import nn

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

Example = tuple[nn.Module, tuple[torch.Tensor, ...]]

VOCAB = 256
SEQ = 16
PAD = 4  # padded positions at the end of an encoder's attention mask

# the tiny text-transformer settings, in the BERT spelling (most configs use it)
BERT_LIKE = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                 max_position_embeddings=64)
# the tiny Llama-like decoder settings
LLAMA_LIKE = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                  intermediate_size=64, max_position_embeddings=64, head_dim=8, pad_token_id=0, bos_token_id=1,
                  eos_token_id=2, tie_word_embeddings=False)
# the tiny BART-like encoder-decoder settings
BART_LIKE = dict(vocab_size=VOCAB, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                 decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64,
                 pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2)
# the tiny wav2vec2-like audio settings: a 2-layer conv feature extractor with total stride 10
WAV2VEC2_LIKE = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                     conv_dim=(32, 32), conv_stride=(5, 2), conv_kernel=(10, 3), num_conv_pos_embeddings=16,
                     num_conv_pos_embedding_groups=4, vocab_size=32)
AUDIO_SAMPLES = 1600


@dataclass
class Arch:
    name: str
    family: str  # encoder, decoder, encoder-decoder, vision, audio
    config: str  # transformers config class name
    model: str  # transformers model class name
    config_kwargs: dict
    inputs: str  # the input kind: text, text-ids, seq2seq, image, audio, features
    outputs: tuple[str, ...] = ("last_hidden_state",)
    attn: str | None = "sdpa"  # attn_implementation, None for models without attention (convnets)
    image_size: int = 32
    extra_kwargs: dict = field(default_factory=dict)  # more forward kwargs (e.g. use_cache=False)
    feature_shape: tuple[int, ...] = ()  # for inputs="features": the shape of the float features
    input_key: str = ""  # for audio: the name of the audio/feature argument (input_values / input_features)
    decoder_ids: bool = False  # audio encoder-decoders: also the decoder's input ids
    note: str = ""


def _enc(name, config, model, outputs=("last_hidden_state",), attn="sdpa", note="", **kw) -> Arch:
    return Arch(name, "encoder", config, model, {**BERT_LIKE, **kw}, "text", tuple(outputs), attn, note=note)


def _dec(name, config, model="", attn="sdpa", note="", base=None, **kw) -> Arch:
    model = model or config.replace("Config", "ForCausalLM")
    return Arch(name, "decoder", config, model, {**(LLAMA_LIKE if base is None else base), **kw}, "text-ids",
                ("logits",), attn, extra_kwargs={"use_cache": False}, note=note)


def _s2s(name, config, model, outputs=("last_hidden_state",), attn="sdpa", note="", base=None, **kw) -> Arch:
    return Arch(name, "encoder-decoder", config, model, {**(BART_LIKE if base is None else base), **kw}, "seq2seq",
                tuple(outputs), attn, extra_kwargs={"use_cache": False}, note=note)


def _vis(name, config, model, outputs=("last_hidden_state",), attn="sdpa", image_size=32, note="", **kw) -> Arch:
    kw = {"image_size": image_size, **kw}
    size = kw["image_size"][0] if isinstance(kw["image_size"], list) else kw["image_size"]
    return Arch(name, "vision", config, model, kw, "image", tuple(outputs), attn, image_size=size, note=note)


def _aud(name, config, model, outputs=("last_hidden_state",), attn="sdpa", inputs="audio", feature_shape=(),
         note="", extra_kwargs=None, input_key="", decoder_ids=False, **kw) -> Arch:
    key = input_key or ("input_values" if inputs == "audio" else "input_features")
    return Arch(name, "audio", config, model, kw, inputs, tuple(outputs), attn, feature_shape=feature_shape,
                extra_kwargs=extra_kwargs or {}, input_key=key, decoder_ids=decoder_ids, note=note)


_T5 = dict(vocab_size=VOCAB, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2, num_heads=4,
           relative_attention_num_buckets=8, relative_attention_max_distance=16, pad_token_id=0, eos_token_id=1,
           decoder_start_token_id=0)
_GPT2 = dict(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=64, n_inner=64, bos_token_id=1,
             eos_token_id=2)
_VIT = dict(patch_size=8, num_channels=3, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=64)
_SWIN = dict(patch_size=4, num_channels=3, embed_dim=16, depths=[1, 1], num_heads=[2, 4],
             window_size=4, mlp_ratio=2.0)
_MOE = dict(num_local_experts=4, num_experts_per_tok=2)

ARCHS: list[Arch] = [
    # ------------------------------------------------------------------------------------------ text encoders
    _enc("bert", "BertConfig", "BertModel", outputs=("last_hidden_state", "pooler_output")),
    _enc("roberta", "RobertaConfig", "RobertaForSequenceClassification", outputs=("logits",), pad_token_id=1),
    _enc("xlm_roberta", "XLMRobertaConfig", "XLMRobertaModel", pad_token_id=1),
    Arch("distilbert", "encoder", "DistilBertConfig", "DistilBertModel",
         dict(vocab_size=VOCAB, dim=32, n_layers=2, n_heads=4, hidden_dim=64, max_position_embeddings=64), "text"),
    _enc("albert", "AlbertConfig", "AlbertForSequenceClassification", outputs=("logits",), embedding_size=16),
    _enc("electra", "ElectraConfig", "ElectraModel", embedding_size=16),
    _enc("deberta", "DebertaConfig", "DebertaModel", attn="eager", relative_attention=True,
         pos_att_type=["c2p", "p2c"], position_biased_input=False, max_relative_positions=-1),
    _enc("deberta_v2", "DebertaV2Config", "DebertaV2ForSequenceClassification", outputs=("logits",), attn="eager",
         relative_attention=True, pos_att_type=["p2c", "c2p"], position_biased_input=False, position_buckets=8,
         norm_rel_ebd="layer_norm", share_att_key=True),
    _enc("mpnet", "MPNetConfig", "MPNetModel", attn="eager", pad_token_id=1),
    _enc("convbert", "ConvBertConfig", "ConvBertModel", attn="eager", embedding_size=32, conv_kernel_size=5),
    _enc("squeezebert", "SqueezeBertConfig", "SqueezeBertModel", attn="eager", embedding_size=32, q_groups=2,
         k_groups=2, v_groups=2, post_attention_groups=2, intermediate_groups=2, output_groups=2),
    _enc("mobilebert", "MobileBertConfig", "MobileBertModel", attn="eager", embedding_size=16, true_hidden_size=16,
         intra_bottleneck_size=16, num_feedforward_networks=2),
    _enc("roformer", "RoFormerConfig", "RoFormerModel", attn="eager", embedding_size=32),
    _enc("ernie", "ErnieConfig", "ErnieModel"),
    _enc("megatron_bert", "MegatronBertConfig", "MegatronBertModel", attn="eager"),
    _enc("esm", "EsmConfig", "EsmModel", vocab_size=33, pad_token_id=1, mask_token_id=32,
         position_embedding_type="rotary", note="protein LM, rotary embeddings"),
    _enc("modernbert", "ModernBertConfig", "ModernBertModel", global_attn_every_n_layers=2, local_attention=8,
         pad_token_id=0, note="local + global attention, rotary"),
    Arch("funnel", "encoder", "FunnelConfig", "FunnelModel",
         dict(vocab_size=VOCAB, block_sizes=[1, 1], block_repeats=[1, 1], d_model=32, n_head=4, d_head=8, d_inner=64,
              num_decoder_layers=1), "text", attn="eager", note="sequence pooling and upsampling"),
    _enc("big_bird", "BigBirdConfig", "BigBirdModel", attn="eager", attention_type="original_full",
         note="full attention: block_sparse needs sequences > 700 tokens at this block size"),
    Arch("nystromformer", "encoder", "NystromformerConfig", "NystromformerModel",
         {**BERT_LIKE, "num_landmarks": 4, "segment_means_seq_len": SEQ, "conv_kernel_size": 5}, "text-ids",
         attn="eager", note="Nystrom landmark attention (pinv iterations); ids only: with a padding mask the "
         "transformers model itself fails (its 4-d mask does not broadcast against the 4 landmarks)"),
    _enc("xlm", "XLMConfig", "XLMModel", attn="eager", emb_dim=32, n_layers=2, n_heads=4, max_position_embeddings=64),
    _enc("fnet", "FNetConfig", "FNetModel", attn=None, use_tpu_fourier_optimizations=False,
         note="FFT token mixing (torch.fft.fftn)"),
    _enc("rembert", "RemBertConfig", "RemBertModel", attn="eager", input_embedding_size=16, output_embedding_size=16),
    _enc("longformer", "LongformerConfig", "LongformerModel", attn="eager", attention_window=4, pad_token_id=1,
         note="sliding-window (chunked) attention"),
    # ------------------------------------------------------------------------------------------------ decoders
    _dec("gpt2", "GPT2Config", "GPT2LMHeadModel", base=_GPT2),
    _dec("gpt_neo", "GPTNeoConfig", attn="eager", base=dict(
        vocab_size=VOCAB, hidden_size=32, num_layers=2, num_heads=4, intermediate_size=64, max_position_embeddings=64,
        attention_types=[[["global", "local"], 1]], window_size=8, bos_token_id=1, eos_token_id=2)),
    _dec("gptj", "GPTJConfig", attn="eager", base=dict(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_inner=64,
                                                       n_positions=64, rotary_dim=4, bos_token_id=1, eos_token_id=2)),
    _dec("gpt_neox", "GPTNeoXConfig", base=dict(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=64, rotary_pct=0.5, bos_token_id=1, eos_token_id=2)),
    _dec("opt", "OPTConfig", base=dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                       ffn_dim=64, max_position_embeddings=64, word_embed_proj_dim=32,
                                       pad_token_id=1, bos_token_id=2, eos_token_id=2)),
    _dec("bloom", "BloomConfig", attn="eager", base=dict(vocab_size=VOCAB, hidden_size=32, n_layer=2, n_head=4,
                                                         bos_token_id=1, eos_token_id=2, pad_token_id=3),
         note="ALiBi"),
    _dec("gpt_bigcode", "GPTBigCodeConfig", base={**_GPT2, "multi_query": True}, note="multi-query attention"),
    _dec("codegen", "CodeGenConfig", attn="eager", base=dict(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4,
                                                             n_inner=64, n_positions=64, n_ctx=64, rotary_dim=4,
                                                             bos_token_id=1, eos_token_id=2)),
    _dec("falcon", "FalconConfig", base=dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2,
                                             num_attention_heads=4, num_kv_heads=2, new_decoder_architecture=True,
                                             bos_token_id=1, eos_token_id=2), note="new decoder architecture, GQA"),
    _dec("llama", "LlamaConfig"),
    _dec("mistral", "MistralConfig", sliding_window=8),
    _dec("mixtral", "MixtralConfig", sliding_window=None, **_MOE, experts_implementation="batched_mm",
         note="mixture of experts (top-2 of 4); experts_implementation='batched_mm' (static shapes: gathers the "
         "chosen experts' weights) instead of the default 'grouped_mm' (sort + grouped matmul, see qwen2_moe)"),
    _dec("qwen2", "Qwen2Config"),
    _dec("qwen3", "Qwen3Config", note="q/k RMSNorm"),
    _dec("qwen2_moe", "Qwen2MoeConfig", num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32,
         shared_expert_intermediate_size=64,
         note="MoE with a shared expert; transformers' default experts_implementation ('grouped_mm')"),
    _dec("phi", "PhiConfig", base=dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                       intermediate_size=64, max_position_embeddings=64, partial_rotary_factor=0.5,
                                       bos_token_id=1, eos_token_id=2)),
    _dec("phi3", "Phi3Config"),
    _dec("gemma", "GemmaConfig"),
    _dec("gemma2", "Gemma2Config", attn="eager", sliding_window=8, note="logit soft-capping, local/global layers"),
    _dec("gemma3", "Gemma3TextConfig", "Gemma3ForCausalLM", sliding_window=8),
    _dec("stablelm", "StableLmConfig", partial_rotary_factor=0.25),
    _dec("olmo", "OlmoConfig"),
    _dec("olmo2", "Olmo2Config"),
    _dec("granite", "GraniteConfig", note="scaled residuals/logits"),
    _dec("cohere", "CohereConfig", note="parallel attention + MLP, LayerNorm without bias"),
    _dec("starcoder2", "Starcoder2Config", sliding_window=8),
    _dec("persimmon", "PersimmonConfig", attn="eager", base=dict(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=64, bos_token_id=1, eos_token_id=2), note="squared ReLU, q/k LayerNorm"),
    _dec("xglm", "XGLMConfig", attn="eager", base=dict(
        vocab_size=VOCAB, d_model=32, num_layers=2, attention_heads=4, ffn_dim=64, max_position_embeddings=64,
        pad_token_id=1, bos_token_id=0, eos_token_id=2),
         note="sinusoidal positions"),
    _dec("biogpt", "BioGptConfig", base={**BERT_LIKE, "pad_token_id": 1, "bos_token_id": 0, "eos_token_id": 2}),
    _dec("mpt", "MptConfig", attn="eager", base=dict(vocab_size=VOCAB, d_model=32, n_layers=2, n_heads=4,
                                                     max_seq_len=64, expansion_ratio=2), note="ALiBi"),
    _dec("mamba", "MambaConfig", attn=None, base=dict(vocab_size=VOCAB, hidden_size=32, state_size=8,
                                                      num_hidden_layers=2, expand=2, conv_kernel=4,
                                                      bos_token_id=1, eos_token_id=2, pad_token_id=0),
         note="selective state space model (sequential scan, slow path)"),
    _dec("smollm3", "SmolLM3Config", no_rope_layer_interval=2, note="NoPE every 2nd layer"),
    _dec("helium", "HeliumConfig"),
    _dec("lfm2", "Lfm2Config", layer_types=["conv", "full_attention"], block_auto_adjust_ff_dim=False,
         conv_L_cache=3, note="short gated convolutions + attention hybrid"),
    _dec("olmoe", "OlmoeConfig", num_experts=4, num_experts_per_tok=2, experts_implementation="batched_mm",
         note="MoE (top-2 of 4), experts_implementation='batched_mm'"),
    _dec("gpt_oss", "GptOssConfig", attn="eager", num_local_experts=4, num_experts_per_tok=2, sliding_window=8,
         layer_types=["sliding_attention", "full_attention"], experts_implementation="batched_mm",
         note="attention sinks, clamped SwiGLU MoE (batched_mm experts)"),
    _dec("recurrent_gemma", "RecurrentGemmaConfig", attn="eager", base=dict(
        vocab_size=VOCAB, hidden_size=32, lru_width=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=1, head_dim=8, attention_window_size=8, conv1d_width=4,
        block_types=["recurrent", "attention"], pad_token_id=0, eos_token_id=1, bos_token_id=2),
         note="RG-LRU recurrence (sequential scan) + local attention"),
    _dec("mamba2", "Mamba2Config", attn=None, base=dict(
        vocab_size=VOCAB, hidden_size=32, num_heads=4, head_dim=16, state_size=8, n_groups=1, num_hidden_layers=2,
        expand=2, conv_kernel=4, chunk_size=8, time_step_rank=4, pad_token_id=0, bos_token_id=1, eos_token_id=2),
         note="SSD (chunked state space duality), torch path"),
    _dec("rwkv", "RwkvConfig", attn=None, base=dict(
        vocab_size=VOCAB, context_length=64, hidden_size=32, num_hidden_layers=2, attention_hidden_size=32,
        intermediate_size=64, bos_token_id=0, eos_token_id=0), note="WKV recurrence (CPU loop over time)"),
    # ------------------------------------------------------------------------------------------- encoder-decoder
    _s2s("t5", "T5Config", "T5Model", base=_T5, note="relative position buckets"),
    _s2s("bart", "BartConfig", "BartModel"),
    _s2s("mbart", "MBartConfig", "MBartForConditionalGeneration", outputs=("logits",)),
    _s2s("marian", "MarianConfig", "MarianMTModel", outputs=("logits",), pad_token_id=3, decoder_start_token_id=3,
         note="sinusoidal positions"),
    _s2s("pegasus", "PegasusConfig", "PegasusModel", pad_token_id=0, decoder_start_token_id=0),
    _s2s("m2m_100", "M2M100Config", "M2M100Model"),
    _s2s("blenderbot", "BlenderbotConfig", "BlenderbotModel"),
    _s2s("led", "LEDConfig", "LEDModel", attn="eager", max_encoder_position_embeddings=64,
         max_decoder_position_embeddings=64, attention_window=[4, 4], note="Longformer encoder"),
    _s2s("prophetnet", "ProphetNetConfig", "ProphetNetModel", attn="eager", base=dict(
        vocab_size=VOCAB, hidden_size=32, encoder_ffn_dim=64, num_encoder_layers=2, num_encoder_attention_heads=4,
        decoder_ffn_dim=64, num_decoder_layers=2, num_decoder_attention_heads=4, max_position_embeddings=64, ngram=2,
        num_buckets=8, relative_max_distance=16, pad_token_id=0, bos_token_id=1, eos_token_id=2),
         note="n-gram stream self-attention"),
    _s2s("longt5", "LongT5Config", "LongT5Model", attn="eager", base=_T5, encoder_attention_type="transient-global",
         local_radius=4, global_block_size=4, note="transient-global local attention"),
    _s2s("switch_transformers", "SwitchTransformersConfig", "SwitchTransformersModel", attn="eager", base=_T5,
         num_experts=4, expert_capacity=8, num_sparse_encoder_layers=1, num_sparse_decoder_layers=1,
         encoder_sparse_step=2, decoder_sparse_step=2, router_jitter_noise=0.0, note="top-1 MoE with capacity"),
    # --------------------------------------------------------------------------------------------------- vision
    _vis("vit", "ViTConfig", "ViTForImageClassification", outputs=("logits",), **_VIT),
    _vis("deit", "DeiTConfig", "DeiTModel", **_VIT),
    _vis("beit", "BeitConfig", "BeitModel", **_VIT, use_relative_position_bias=True, use_mean_pooling=True,
         note="relative position bias"),
    _vis("dinov2", "Dinov2Config", "Dinov2Model", **_VIT, layerscale_value=0.5),
    _vis("swin", "SwinConfig", "SwinForImageClassification", outputs=("logits",), **_SWIN),
    _vis("swinv2", "Swinv2Config", "Swinv2Model", attn="eager", **_SWIN),
    _vis("convnext", "ConvNextConfig", "ConvNextForImageClassification", outputs=("logits",), attn=None,
         hidden_sizes=[16, 32], depths=[1, 1], num_stages=2),
    _vis("convnextv2", "ConvNextV2Config", "ConvNextV2Model", attn=None, hidden_sizes=[16, 32], depths=[1, 1],
         num_stages=2),
    _vis("resnet", "ResNetConfig", "ResNetForImageClassification", outputs=("logits",), attn=None, embedding_size=16,
         hidden_sizes=[16, 32], depths=[1, 1], layer_type="bottleneck"),
    _vis("mobilenet_v1", "MobileNetV1Config", "MobileNetV1ForImageClassification", outputs=("logits",), attn=None,
         depth_multiplier=0.25),
    _vis("mobilenet_v2", "MobileNetV2Config", "MobileNetV2ForImageClassification", outputs=("logits",), attn=None,
         depth_multiplier=0.25),
    _vis("efficientnet", "EfficientNetConfig", "EfficientNetForImageClassification", outputs=("logits",), attn=None,
         width_coefficient=0.25, depth_coefficient=0.25, hidden_dim=320),
    _vis("regnet", "RegNetConfig", "RegNetModel", attn=None, embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1],
         groups_width=8),
    _vis("bit", "BitConfig", "BitModel", attn=None, embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1],
         layer_type="bottleneck", global_padding="SAME", num_groups=4,
         note="weight-standardized convs, dynamic SAME padding"),
    _vis("segformer", "SegformerConfig", "SegformerForSemanticSegmentation", outputs=("logits",), num_encoder_blocks=2,
         depths=[1, 1], sr_ratios=[2, 1], hidden_sizes=[16, 32], patch_sizes=[7, 3], strides=[4, 2],
         num_attention_heads=[1, 2], mlp_ratios=[2, 2], decoder_hidden_size=32),
    _vis("levit", "LevitConfig", "LevitModel", patch_size=16, hidden_sizes=[32, 48],
         num_attention_heads=[2, 3], depths=[1, 1], key_dim=[8, 8], drop_path_rate=0, mlp_ratio=[2, 2],
         attention_ratio=[2, 2], down_ops=[["Subsample", 8, 2, 4, 2, 2]], attn=None,
         note="attention biases indexed by offsets, hard-swish"),
    _vis("poolformer", "PoolFormerConfig", "PoolFormerModel", attn=None, hidden_sizes=[16, 32], depths=[1, 1],
         num_encoder_blocks=2, patch_sizes=[7, 3], strides=[4, 2], padding=[2, 1], pool_size=3, mlp_ratio=2.0),
    _vis("mobilevit", "MobileViTConfig", "MobileViTForImageClassification", outputs=("logits",), attn=None,
         image_size=64, hidden_sizes=[32, 32, 32], neck_hidden_sizes=[8, 8, 16, 16, 16, 24, 64],
         num_attention_heads=2, patch_size=2, note="unfold/fold of patches"),
    _vis("cvt", "CvtConfig", "CvtModel", attn=None, embed_dim=[16, 32], num_heads=[1, 2], depth=[1, 2],
         patch_sizes=[7, 3], patch_stride=[4, 2], patch_padding=[2, 1], mlp_ratio=[2.0, 2.0],
         qkv_projection_method=["dw_bn", "dw_bn"], kernel_qkv=[3, 3], padding_q=[1, 1], padding_kv=[1, 1],
         stride_kv=[2, 2], stride_q=[1, 1], cls_token=[False, True], drop_path_rate=[0.0, 0.0], drop_rate=[0.0, 0.0],
         attention_drop_rate=[0.0, 0.0], qkv_bias=[True, True],
         note="convolutional projections in attention"),
    _vis("focalnet", "FocalNetConfig", "FocalNetModel", attn=None, embed_dim=16, depths=[1, 1], focal_levels=[2, 2],
         focal_windows=[3, 3], patch_size=4),
    _vis("clip_vision", "CLIPVisionConfig", "CLIPVisionModel", outputs=("last_hidden_state", "pooler_output"),
         **_VIT, note="quick-GELU"),
    _vis("siglip_vision", "SiglipVisionConfig", "SiglipVisionModel", outputs=("last_hidden_state", "pooler_output"),
         **_VIT, note="attention-pooling head"),
    _vis("pvt_v2", "PvtV2Config", "PvtV2Model", attn="eager", hidden_sizes=[16, 32], depths=[1, 1],
         num_encoder_blocks=2, sr_ratios=[2, 1], num_attention_heads=[1, 2], patch_sizes=[7, 3], strides=[4, 2],
         mlp_ratios=[2, 2]),
    _vis("dinov2_with_registers", "Dinov2WithRegistersConfig", "Dinov2WithRegistersModel", **_VIT,
         num_register_tokens=2),
    _vis("yolos", "YolosConfig", "YolosForObjectDetection", outputs=("logits", "pred_boxes"), **_VIT,
         image_size=[32, 32], num_detection_tokens=4, note="detection tokens, interpolated position embeddings"),
    _vis("vitdet", "VitDetConfig", "VitDetModel", attn="eager", hidden_size=32, num_hidden_layers=2,
         num_attention_heads=4, mlp_ratio=2, patch_size=4, pretrain_image_size=32, window_block_indices=[0],
         window_size=4, use_relative_position_embeddings=True,
         note="window attention, decomposed relative positions"),
    _vis("dpt", "DPTConfig", "DPTForSemanticSegmentation", outputs=("logits",), hidden_size=32, num_hidden_layers=4,
         num_attention_heads=4, intermediate_size=64, patch_size=8, backbone_out_indices=[0, 1, 2, 3],
         neck_hidden_sizes=[8, 16, 32, 32], fusion_hidden_size=16, use_auxiliary_head=False,
         note="reassemble + fusion, bilinear upsampling (the segmentation head: the depth head's ReLU output of a "
         "random model is ~1e-8)"),
    _vis("glpn", "GLPNConfig", "GLPNForDepthEstimation", outputs=("predicted_depth",), attn=None, image_size=64,
         hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1], num_attention_heads=[1, 1, 1, 2], decoder_hidden_size=16),
    _vis("hiera", "HieraConfig", "HieraModel", attn=None, image_size=[64, 64], embed_dim=16, depths=[1, 1, 1, 1],
         num_heads=[1, 1, 2, 2], num_query_pool=2, masked_unit_size=[8, 8], note="mask-unit attention, query pooling"),
    _vis("swiftformer", "SwiftFormerConfig", "SwiftFormerModel", attn=None, depths=[1, 1, 1, 1],
         embed_dims=[8, 16, 24, 32], note="efficient additive attention"),
    _vis("mobilevitv2", "MobileViTV2Config", "MobileViTV2ForImageClassification", outputs=("logits",), attn=None,
         image_size=64, width_multiplier=0.25, n_attn_blocks=[1, 1, 1], base_attn_unit_dims=[32, 48, 64],
         note="separable linear attention, unfold/fold"),
    # ---------------------------------------------------------------------------------------------------- audio
    _aud("wav2vec2", "Wav2Vec2Config", "Wav2Vec2Model", **WAV2VEC2_LIKE),
    _aud("hubert", "HubertConfig", "HubertForSequenceClassification", outputs=("logits",),
         **WAV2VEC2_LIKE, num_labels=4, classifier_proj_size=16),
    _aud("wavlm", "WavLMConfig", "WavLMModel", attn="eager", **WAV2VEC2_LIKE, num_buckets=32, max_bucket_distance=64,
         note="gated relative position bias"),
    _aud("data2vec_audio", "Data2VecAudioConfig", "Data2VecAudioModel",
         **{**WAV2VEC2_LIKE, "num_conv_pos_embeddings": 5}, conv_pos_kernel_size=5),
    _aud("sew", "SEWConfig", "SEWModel", **WAV2VEC2_LIKE, squeeze_factor=2),
    _aud("unispeech", "UniSpeechConfig", "UniSpeechModel", **WAV2VEC2_LIKE),
    _aud("whisper", "WhisperConfig", "WhisperModel", inputs="features", feature_shape=(1, 16, 64), decoder_ids=True,
         extra_kwargs={"use_cache": False}, vocab_size=VOCAB, num_mel_bins=16, d_model=32, encoder_layers=2,
         decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64,
         decoder_ffn_dim=64, max_source_positions=32, max_target_positions=32, pad_token_id=0, bos_token_id=1,
         eos_token_id=2, decoder_start_token_id=1, note="encoder on log-mel features + decoder on 16 ids"),
    _aud("audio_spectrogram_transformer", "ASTConfig", "ASTForAudioClassification", outputs=("logits",),
         inputs="features", input_key="input_values", feature_shape=(1, 64, 16), hidden_size=32,
         num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, patch_size=8, frequency_stride=8,
         time_stride=8, max_length=64, num_mel_bins=16),
    _aud("speech_to_text", "Speech2TextConfig", "Speech2TextModel", attn="eager", inputs="features",
         feature_shape=(1, 32, 16), decoder_ids=True, extra_kwargs={"use_cache": False}, vocab_size=VOCAB,
         d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4,
         encoder_ffn_dim=64, decoder_ffn_dim=64, max_source_positions=64, max_target_positions=64,
         input_feat_per_channel=16, num_conv_layers=2, conv_channels=32, conv_kernel_sizes=[5, 5], pad_token_id=1,
         bos_token_id=0, eos_token_id=2, decoder_start_token_id=2,
         note="conv subsampler + encoder-decoder on filterbank features"),
    _aud("wav2vec2_conformer", "Wav2Vec2ConformerConfig", "Wav2Vec2ConformerModel", attn="eager",
         **WAV2VEC2_LIKE, position_embeddings_type="relative", conv_depthwise_kernel_size=7,
         note="conformer blocks: relative positions, depthwise conv + BatchNorm"),
    _aud("sew_d", "SEWDConfig", "SEWDModel", attn="eager", **WAV2VEC2_LIKE, position_buckets=16,
         max_position_embeddings=64, note="DeBERTa-v2 disentangled attention on audio"),
    _aud("wav2vec2_bert", "Wav2Vec2BertConfig", "Wav2Vec2BertModel", attn="eager", inputs="features",
         feature_shape=(1, 20, 16), hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
         feature_projection_input_dim=16, output_hidden_size=32, conv_depthwise_kernel_size=7,
         left_max_position_embeddings=8, right_max_position_embeddings=4, note="relative_key positions"),
    _aud("moonshine", "MoonshineConfig", "MoonshineModel", decoder_ids=True, extra_kwargs={"use_cache": False},
         vocab_size=VOCAB, hidden_size=32, intermediate_size=64, encoder_num_hidden_layers=2,
         decoder_num_hidden_layers=2, encoder_num_attention_heads=4, decoder_num_attention_heads=4,
         encoder_num_key_value_heads=4, decoder_num_key_value_heads=4, max_position_embeddings=64, pad_token_id=0,
         note="conv stem on raw audio + rotary encoder-decoder"),
    _aud("encodec", "EncodecConfig", "EncodecModel", outputs=("audio_values",), attn=None, num_filters=4,
         hidden_size=16, upsampling_ratios=[4, 2], codebook_size=16, codebook_dim=16, num_lstm_layers=1,
         target_bandwidths=[1.5], sampling_rate=1600, input_key="input_values", feature_shape=(1, 1, AUDIO_SAMPLES),
         note="neural codec: conv encoder, LSTM, residual vector quantizer (argmin), conv decoder"),
]

SWEEP: dict[str, Arch] = {a.name: a for a in ARCHS}
assert len(SWEEP) == len(ARCHS), "duplicate architecture names"


class _Wrap(nn.Module):
    """Calls a transformers model with named tensors and returns the named outputs as a tensor or a tuple."""

    def __init__(self, model: nn.Module, arg_names: tuple[str, ...], outputs: tuple[str, ...], extra: dict):
        super().__init__()
        self.model = model
        self.arg_names, self.outputs, self.extra = arg_names, outputs, extra

    def forward(self, *args):
        out = self.model(**dict(zip(self.arg_names, args)), **self.extra, return_dict=True)
        got = tuple(out[n] for n in self.outputs)
        return got[0] if len(got) == 1 else got


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _ids(vocab: int, length: int = SEQ, seed: int = 1) -> torch.Tensor:
    return torch.randint(4, vocab, (1, length), generator=_gen(seed), dtype=torch.int64)


def _mask(length: int = SEQ) -> torch.Tensor:
    m = torch.ones(1, length, dtype=torch.int64)
    m[:, length - PAD:] = 0
    return m


def example_inputs(arch: Arch, config) -> tuple[tuple[str, ...], tuple[torch.Tensor, ...]]:
    """(forward argument names, example tensors) for an architecture."""
    vocab = getattr(config, "vocab_size", VOCAB) or VOCAB
    if arch.inputs == "text":
        return ("input_ids", "attention_mask"), (_ids(vocab), _mask())
    if arch.inputs == "text-ids":
        return ("input_ids",), (_ids(vocab),)
    if arch.inputs == "seq2seq":
        return ("input_ids", "attention_mask", "decoder_input_ids"), (_ids(vocab), _mask(), _ids(vocab, seed=2))
    if arch.inputs == "image":
        return ("pixel_values",), (torch.randn(1, 3, arch.image_size, arch.image_size, generator=_gen(3)),)
    if arch.inputs in ("audio", "features"):
        shape = arch.feature_shape or (1, AUDIO_SAMPLES)
        x = torch.randn(*shape, generator=_gen(4 if arch.inputs == "audio" else 5))
        if arch.decoder_ids:  # an encoder-decoder: the decoder's ids too
            return (arch.input_key, "decoder_input_ids"), (x, _ids(vocab, seed=2))
        return (arch.input_key,), (x,)
    raise ValueError(f"unknown input kind {arch.inputs!r}")


def build_config(arch: Arch):
    import transformers

    kwargs = dict(arch.config_kwargs)
    if arch.attn is not None:
        kwargs["attn_implementation"] = arch.attn
    return getattr(transformers, arch.config)(**kwargs)


def build(name: str) -> Example:
    """(wrapped eval module, example inputs) for one architecture of the sweep; deterministic."""
    import transformers

    arch = SWEEP[name]
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        config = build_config(arch)
        torch.manual_seed(0)
        model = getattr(transformers, arch.model)(config).eval()
    names, inputs = example_inputs(arch, config)
    wrapped = _Wrap(model, names, arch.outputs, arch.extra_kwargs).eval()
    _calibrate_batchnorm(wrapped, inputs)
    return wrapped, inputs


def _calibrate_batchnorm(model: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
    """Give every BatchNorm non-trivial running statistics (as ``tests.models.zoo._finish`` does): a calibration
    pass sets them to the per-channel stats of its input, perturbed, and random affine params. Random-init convnets
    otherwise shrink activations layer by layer to ~1e-30 (MobileNet), which would make any numerical comparison
    vacuous; BN folding bugs now change the numbers.

    The calibration batch is the example plus 7 random inputs like it: at 32 px the last stages of a convnet see
    1x1 maps, and the variance of one value is 0; ``running_var`` would then be clamped to ~0 around a mean equal
    to the value itself, and BN would subtract two nearly equal numbers and amplify float rounding by ~100x per
    layer (a badly conditioned test model, not a compiler error)."""
    gen = torch.Generator().manual_seed(6)
    calib = tuple(torch.cat([x, *(torch.randn(x.shape, generator=gen) for _ in range(7))]) if x.is_floating_point()
                  else x.repeat(8, *([1] * (x.dim() - 1))) for x in inputs)

    @torch.no_grad()
    def calibrate(bn: nn.Module, args: tuple) -> None:
        x = args[0]
        dims = [0, *range(2, x.dim())]
        mean, var = x.mean(dims), x.var(dims, unbiased=False).clamp_min(1e-3)
        bn.running_mean.copy_(mean + 0.2 * var.sqrt() * torch.randn(mean.shape, generator=gen))
        bn.running_var.copy_(var * torch.empty(var.shape).uniform_(0.5, 2.0, generator=gen))
        if bn.weight is not None:
            bn.weight.uniform_(0.5, 1.5, generator=gen)
            bn.bias.normal_(0.0, 0.2, generator=gen)

    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not bns:
        return
    handles = [bn.register_forward_pre_hook(calibrate) for bn in bns]
    try:
        with torch.no_grad():
            model(*calib)
    finally:
        for h in handles:
            h.remove()


def family_counts() -> dict[str, int]:
    counts: dict[str, int] = {}
    for a in ARCHS:
        counts[a.family] = counts.get(a.family, 0) + 1
    return counts
