"""``QuantConfig``: every knob of quantization, and the short mode strings ``compile(quantize=...)`` takes.

    edgeopt.compile(m, x, quantize="int8", calibration_data=batches)   # static: weights and activations int8
    edgeopt.compile(m, x, quantize="int8-dynamic")    # int8 weights, activations quantized per row at run time
    edgeopt.compile(m, x, quantize="int8-weight")     # weight-only int8, dequantized inside the kernel
    edgeopt.compile(m, x, quantize="int4-weight")     # weight-only int4, group-wise scales
    edgeopt.compile(m, x, quantize=edgeopt.QuantConfig(mode="int8", calibrator="entropy", keep_float=["fc"]))
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field, replace

from ..errors import EdgeoptError

MODES = ("int8", "int8-dynamic", "int8-weight", "int4-weight")
CALIBRATORS = ("minmax", "percentile", "entropy", "mse")
GRANULARITIES = ("per-channel", "per-tensor", "per-group")
ROUNDINGS = ("auto", "nearest", "gptq")
#: ops whose weights and inputs the quantization passes convert (anything else stays float)
QUANTIZABLE_OPS = ("conv2d", "linear", "matmul")


class QuantizationError(EdgeoptError):
    """A quantization request that cannot be honoured (bad mode, missing calibration data...)."""


@dataclass(frozen=True)
class QuantConfig:
    """How to quantize a model.

    mode          one of ``MODES``
    weights       "per-channel" (symmetric, one scale per output channel: the default), "per-tensor", or
                  "per-group" (weight-only int8: a scale and a minimum per ``group_size`` inputs, as int4 always
                  has; exact for weights that come from 32-element block formats such as GGUF's Q4_1 and Q8_0)
    calibrator    how static activation ranges are chosen from the calibration data: "minmax" (the whole
                  observed range), "percentile" (clip to the ``percentile``-th percentile of |x|), "entropy"
                  (the clip that minimises the KL divergence of the quantized histogram, TensorRT's method) or
                  "mse" (the clip that minimises the mean squared quantization error)
    percentile    for the "percentile" calibrator
    group_size    int4 (and "per-group" int8): weights share one scale and minimum per ``group_size`` inputs
    keep_float    layers left in float: module names (e.g. "classifier", or "features" for every layer in it), op
                  names (e.g. "matmul"), IR value names or source-line fragments of the layers (``compiled.compare``
                  lists them), each read as the first of these kinds that names a layer (``named_layers``); a name
                  that matches no layer gets a warning
    keep_int8     int4-weight: layers quantized to per-group int8 instead, named as for ``keep_float`` (a language
                  model's output projection and embedding, as llama.cpp's 4-bit formats keep them at 8 bits)
    integer_kernels  static int8 layers run as integer kernels (u8 x i8 summed in i32, ``fold_quantized``); False
                  keeps them as float kernels on dequantized values (the same numbers, for debugging)
    int8_image_convs  convs that read fewer than 4 channels (an image's first conv), on CPUs with int8 dot products:
                  "auto" (default) quantizes such a conv where it reads 8-bit pixels (found in the calibration
                  data: read exactly) and sums at least ``image_convs.IMAGE_CONV_MIN_PATCH`` inputs per output (a
                  7x7 stem: ResNet-18's takes 0.38 instead of 1.5 ms; a 3x3 stem stays float: it gains nothing), with
                  its levels chosen by GPTQ (the nearest ones cost EfficientNet-Lite0's logits 1 - cosine 0.00238
                  against 0.00185 with the float stem; GPTQ's 0.00190); True: one int8 conv, rounded as
                  ``weight_rounding`` says; "split": two int8 convs on the same input, the weight's levels and its
                  rounding residual's (15-bit weights, twice the int8 work: 0.00183); False: float
    quantized_residuals  static int8: the other readers of a quantized activation (a residual add, a concatenation)
                  read its int8 copy, so the kernel that makes it stores int8 only (ResNet-18 6.9 -> 5.8 ms on Zen 4;
                  MiniLM cosine 0.993 -> 0.990);
                  False keeps them on the float value (a float copy stored beside the int8 one)
    max_drop      static int8's accuracy budget: ``metric`` on the calibration data may fall at most this much
                  below the float model's; the most sensitive layers stay float until it holds
    metric        "top1" (agreement of the arg-max of the first output), "cosine" (mean cosine of the first
                  output), or a function ``(float_outputs, quant_outputs) -> score`` (lists of output lists)
    input_ranges  static int8: layer name (its module's name, e.g. "features.3") -> the (lo, hi) range of its input
                  activation, used instead of a calibrated one; ``weight_scales``: layer name -> its weight's scale
                  per output channel. Quantization-aware training learns both
                  (``edgeopt.compress.prepare_qat(...).export()``)
    bias_correction  static int8: shift each biased layer's bias by the mean error weight rounding causes (off
                  after QAT: training already compensated)
    weight_rounding  static int8: "nearest" (each weight to its nearest level), "gptq" (``edgeopt.quant.rounding``:
                  levels chosen, on the same grid, to minimize the error of each conv / linear layer's output on the
                  calibration data) or "auto" (default): GPTQ where the dense layers get 7-bit levels
                  (``reduce_range``: it takes EfficientNet-Lite0 built for AVX2 from 90.6% to 95.0% top-1 agreement),
                  nearest on 8-bit targets
    activation_scales  static int8: "per-channel" (default) gives a conv input (rank 4, read only by convs among the
                  layers quantized) a scale and zero point per channel, and a linear layer's input of tokens (rank
                  3, read only by linear layers) one per feature (its last axis), where the readers' modelled rounding
                  noise falls by 5% or more (``edgeopt.quant.channel_noise``): each channel's calibrated range with
                  25% headroom, at least half the tensor's (a quarter for features: ``calibrate.channel_ranges``), for
                  channels seen at least 256 times and more than once per sample (not a pooled vector's). A
                  depthwise conv takes them in its per-channel requantize at no cost; a dense conv or linear layer
                  reads the values in units of each channel's share of the largest scale and takes the shares into
                  its weight's input channels before rounding (SmoothQuant's migration, bounded by the floor).
                  Pretrained MobileNetV2 (800 photo crops, minmax): logits 1 - cosine 0.0140 -> 0.0046, top-1
                  agreement 84.0% -> 91.4%; EfficientNet-Lite0 0.00190 -> 0.00188; all-MiniLM-L6-v2's embedding
                  cosine 0.98977 -> 0.99793 (500 sentences). "per-tensor": one scale per activation
    reduce_range  int8 and int8-dynamic: weights on 7-bit levels (-64..64) instead of -127..127. "auto" (default): where
                  the target's int8 dot product needs them to be exact, i.e. x86 CPUs with AVX2 but no VNNI, whose
                  ``vpmaddubsw`` then runs integer kernels at twice the speed of the 8-bit path (ONNX Runtime's
                  ``reduce_range``, for the same instruction); True: always; False: never (AVX2 kernels then widen to
                  16 bits, ``vpmaddwd``: no faster than fp32). Only layers ``vpmaddubsw`` will run get 7 bits:
                  depthwise convs, shapes no 8 x 4 tile fits, embedding tables and QAT-learned grids keep 8 bits
    """

    mode: str = "int8"
    weights: str = "per-channel"
    calibrator: str = "minmax"
    percentile: float = 99.99
    group_size: int = 32
    keep_float: tuple[str, ...] = field(default_factory=tuple)
    keep_int8: tuple[str, ...] = field(default_factory=tuple)
    integer_kernels: bool = True
    int8_image_convs: bool | str = "auto"
    quantized_residuals: bool = True
    max_drop: float | None = None
    metric: object = "top1"
    input_ranges: dict = field(default_factory=dict)
    weight_scales: dict = field(default_factory=dict)
    bias_correction: bool = True
    weight_rounding: str = "auto"
    reduce_range: bool | str = "auto"
    activation_scales: str = "per-channel"

    def __post_init__(self):
        if self.mode not in MODES:
            raise QuantizationError(f"quantize mode {self.mode!r} is not one of {', '.join(MODES)}")
        if self.weights not in GRANULARITIES:
            raise QuantizationError(f"QuantConfig.weights must be one of {GRANULARITIES}, got {self.weights!r}")
        if self.calibrator not in CALIBRATORS:
            raise QuantizationError(f"QuantConfig.calibrator must be one of {CALIBRATORS}, got {self.calibrator!r}")
        if self.weights == "per-group" and not self.weight_only:
            raise QuantizationError(f"QuantConfig.weights='per-group' is for the weight-only modes, not {self.mode!r}")
        if self.weight_rounding not in ROUNDINGS:
            raise QuantizationError(f"QuantConfig.weight_rounding must be one of {ROUNDINGS}, "
                                    f"got {self.weight_rounding!r}")
        if self.int8_image_convs not in (False, True, "split", "auto"):
            raise QuantizationError(f"QuantConfig.int8_image_convs must be 'auto', 'split', True or False, "
                                    f"got {self.int8_image_convs!r}")
        if not (isinstance(self.reduce_range, bool) or self.reduce_range == "auto"):
            raise QuantizationError(f"QuantConfig.reduce_range must be 'auto', True or False, "
                                    f"got {self.reduce_range!r}")
        if self.activation_scales not in ("per-channel", "per-tensor"):
            raise QuantizationError(f"QuantConfig.activation_scales must be 'per-channel' or 'per-tensor', "
                                    f"got {self.activation_scales!r}")
        if not 50.0 < self.percentile <= 100.0:
            raise QuantizationError(f"QuantConfig.percentile must be in (50, 100], got {self.percentile}")
        if self.group_size < 2 or self.group_size % 2:
            raise QuantizationError(f"QuantConfig.group_size must be an even number >= 2, got {self.group_size}")
        for name in ("keep_float", "keep_int8"):  # one name given as a string is one name, not its letters
            names = getattr(self, name)
            names = (names,) if isinstance(names, str) else tuple(names)
            if any(not isinstance(k, str) or not k for k in names):
                raise QuantizationError(f"QuantConfig.{name} takes layer names (non-empty strings), got {names!r}")
            object.__setattr__(self, name, names)
        if isinstance(self.metric, str) and self.metric not in ("top1", "cosine"):
            raise QuantizationError(f"QuantConfig.metric must be 'top1', 'cosine' or a function, got {self.metric!r}")
        if self.max_drop is not None and not 0 <= self.max_drop < 1:
            raise QuantizationError(f"QuantConfig.max_drop must be in [0, 1), got {self.max_drop}")

    @property
    def static(self) -> bool:
        return self.mode == "int8"

    @property
    def weight_only(self) -> bool:
        return self.mode.endswith("-weight")

    @property
    def weight_bits(self) -> int:
        return 4 if self.mode == "int4-weight" else 8

    def float_layers(self, g, layers) -> set:
        """The nodes of ``layers`` (those of graph ``g`` the pass could quantize) that ``keep_float`` names
        (``named_layers``); warns about names that match none of them."""
        return named_layers("keep_float", self.keep_float, g, layers, self.mode)

    def int8_layers(self, g, layers) -> set:
        """int4-weight: the nodes of ``layers`` that ``keep_int8`` names (``named_layers``)."""
        return named_layers("keep_int8", self.keep_int8, g, layers, self.mode) if self.mode == "int4-weight" else set()

    def describe(self) -> dict:
        out = {"mode": self.mode, "weights": self.weights}
        if self.static:
            out["calibrator"], out["weight_rounding"] = self.calibrator, self.weight_rounding
        if self.static and self.activation_scales != "per-channel":
            out["activation_scales"] = self.activation_scales
        if self.reduce_range != "auto" and self.mode in ("int8", "int8-dynamic"):
            out["reduce_range"] = self.reduce_range
        if self.mode == "int4-weight" or self.weights == "per-group":
            out["group_size"] = self.group_size
        if self.keep_float:
            out["keep_float"] = list(self.keep_float)
        if self.keep_int8 and self.mode == "int4-weight":
            out["keep_int8"] = list(self.keep_int8)
        if self.max_drop is not None:
            out["max_drop"] = self.max_drop
        if self.input_ranges or self.weight_scales:
            out["learned_ranges"], out["learned_weight_scales"] = len(self.input_ranges), len(self.weight_scales)
        return out


def named_layers(option: str, names, g, layers, mode: str = "") -> set:
    """The nodes of ``layers`` (of graph ``g``: the layers a pass of quantize ``mode`` could quantize) that ``names``
    (the entries of QuantConfig option ``option``) name. Each name is read as the first of these kinds, in this order,
    that names any of the layers: a module name or a module the layers are in (``g.layer_name``: "features" names
    "features.0"), an op ("linear": every linear layer), an IR value name, else a fragment of a layer's source line.
    So "head" names the module ``head``, not every layer whose source line mentions it, and a module named ``linear``
    is that module, not every linear layer. Names that match no layer get a warning listing the module names."""
    modules = {n: g.layer_name(n) for n in layers}
    kinds = (lambda k, n: modules[n] == k or modules[n].startswith(k + "."),
             lambda k, n: n.op == k, lambda k, n: n.outputs[0].name == k,
             lambda k, n: bool(n.source and k in n.source))
    out, unmatched = set(), []
    for name in names:
        hit = next((found for match in kinds if (found := {n for n in layers if match(name, n)})), None)
        if hit:
            out |= hit
        else:
            unmatched.append(name)
    if unmatched:
        known = sorted(set(modules.values()))
        ops = sorted({n.op for n in layers})
        which = f"that quantize={mode!r} quantizes" if mode else "of this model"
        warnings.warn(f"QuantConfig.{option} names no layer {which}: {unmatched}. Name a layer by its module name "
                      f"(these layers': {known[:6]}{'...' if len(known) > 6 else ''}; a module names the layers in "
                      f"it), its op ({', '.join(ops)}), its IR value name or a fragment of its source line "
                      f"(compiled.compare() lists them)", stacklevel=3)
    return out


def as_config(quantize) -> QuantConfig | None:
    """``compile``'s ``quantize=`` argument (None, a mode string or a QuantConfig) as a QuantConfig or None."""
    if quantize is None or quantize is False:
        return None
    if isinstance(quantize, QuantConfig):
        return quantize
    if isinstance(quantize, str):
        return QuantConfig(mode=quantize)
    raise QuantizationError(f"quantize= takes a mode string ({', '.join(MODES)}) or an edgeopt.QuantConfig, "
                            f"got {type(quantize).__name__}")


def with_mode(cfg: QuantConfig, mode: str) -> QuantConfig:
    return replace(cfg, mode=mode)
