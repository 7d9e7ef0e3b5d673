"""The catalogue's records: one ``OpDef`` a built-in op, holding everything the
harness knows about it (see ``opdef.py``).  Adding an op is one record here plus
its forward and VJP in ``reference_impl``."""

from __future__ import annotations

import numpy as np

from . import batching as copies
from . import formulas
from . import kinks as kink_rules
from . import placement as place
from . import shapes
from .opdef import _BUILTIN, CATALOGUE, CONST, PARAM, OpDef, Placement, Sample, TensorArg, register_op

__all__ = ["BUILTIN_OPS"]

X = TensorArg("x")
W = TensorArg("weight", PARAM)
B = TensorArg("bias", PARAM)
B_OPT = TensorArg("bias", PARAM, optional=True)


def _S(shapes, hyper=None, init=None):
    return Sample(shapes, hyper or {}, init or {})


def _everywhere(rank):
    return {"mlp": rank, "cnn": rank, "sequence": rank}


def _activation(name, rank, hyper=None, kinks=False, complex_step=True, settings=({},), draws=None, torch=None,
                branch=None, margin=None):
    """An elementwise activation: kinks (at 0 unless ``branch`` and ``margin`` say
    where) when it has them, judged at an exact kink by the elementwise subgradient
    rule, batched by broadcasting, drawn as an activation block in every family
    (``draws``: hyperparameter choices); ``torch``: its formula (default: the one
    of the same name in formulas.py)."""
    return OpDef(
        name, (X,), shapes.same, hyper or {}, family="activation", kinks=kinks, complex_step=complex_step,
        branch=(branch or kink_rules.sign_branch) if kinks else None,
        margin=(margin or kink_rules.sign_margin) if kinks else None,
        subgradient=kink_rules.elementwise_subgradient(name) if kinks else None,
        samples=tuple(_S({"x": shape}, h) for shape in ((7,), (3, 5), (2, 3, 4)) for h in settings),
        torch=torch or getattr(formulas, name), batching=copies.broadcasting,
        placement=Placement("activation", _everywhere(rank), place.place_activation(name, **(draws or {}))),
    )


_AWAY_FROM_ZERO = {"kind": "uniform", "low": 0.5, "high": 2.0}
_GRID = {"kind": "uniform", "low": -1.2, "high": 1.2}  # grid_sample's points: inside [-1, 1] and a little beyond
_HINGE = kink_rules.hinge_branch("margin")  # (branch, margin) where margin - x passes 0
_NORM = kink_rules.norm_branch()  # (branch, margin) where a norm passes eps
_SIGNS = {"kind": "sign"}  # the -1 / 1 labels of margin losses
_PROBABILITIES = {"kind": "uniform", "low": 0.05, "high": 1.0}
_COUNTS = {"kind": "uniform", "low": 0.0, "high": 3.0}
_LABELS = {"kind": "mask", "p": 0.5}  # 0 / 1


def _at(points):
    """branch= and margin= of an activation whose kinks lie at ``points(**hyper)``."""
    return {"branch": kink_rules.points_branch(points), "margin": kink_rules.points_margin(points)}


# A convolution's settings: F.convNd's, padding also "same" or "valid", and
# nn.ConvNd's padding_mode (zeros, reflect, replicate, circular).
_CONV_HYPER = {"stride": 1, "padding": 0, "dilation": 1, "groups": 1, "padding_mode": "zeros"}

_OPS = [
    OpDef("linear", (X, W, B_OPT), shapes.linear, samples=(
        _S({"x": (4, 3), "weight": (5, 3), "bias": (5,)}),
        _S({"x": (4, 3), "weight": (2, 3)}),
        _S({"x": (2, 3, 6), "weight": (4, 6), "bias": (4,)}),
    ), doc="y = x W^T + b",
          torch=formulas.linear, batching=copies.linear, placement=Placement("layer", {"mlp": 0, "cnn": 4, "sequence": 0}, place.place_linear)),
    OpDef("matmul", (TensorArg("a"), TensorArg("b")), shapes.matmul, samples=(
        _S({"a": (3, 4), "b": (4, 2)}),
        _S({"a": (2, 3, 4), "b": (2, 4, 5)}),
        _S({"a": (2, 1, 3, 4), "b": (3, 4, 2)}),  # broadcast batch dims
        _S({"a": (2, 3, 4), "b": (4,)}), _S({"a": (3,), "b": (2, 3, 5)}), _S({"a": (4,), "b": (4,)}),  # 1-d operands
    ), doc="batched a @ b with broadcasting batch dims; a 1-d operand is a row (a) or a column (b)",
          torch=formulas.matmul, batching=copies.matmul, placement=Placement("layer", {"mlp": 1, "sequence": 2}, place.place_matmul, place.rank_at_least(2))),
    OpDef("conv1d", (X, W, B_OPT), shapes.conv(1), _CONV_HYPER, samples=(
        _S({"x": (2, 3, 9), "weight": (4, 3, 3), "bias": (4,)}),
        _S({"x": (2, 4, 10), "weight": (6, 2, 3)}, {"stride": 2, "padding": 1, "dilation": 2, "groups": 2}),
        _S({"x": (1, 2, 7), "weight": (2, 2, 2), "bias": (2,)}, {"stride": 3, "padding": 2}),
        _S({"x": (2, 2, 6), "weight": (3, 2, 4), "bias": (3,)}, {"padding": "same"}),  # 3 taps of padding: 1 before, 2 after
        _S({"x": (1, 2, 7), "weight": (2, 2, 3)}, {"padding": 2, "padding_mode": "reflect"}),
        _S({"x": (1, 2, 5), "weight": (2, 1, 3), "bias": (2,)}, {"padding": 2, "padding_mode": "circular", "groups": 2}),
    ), doc="F.conv1d; padding_mode as nn.Conv1d takes it",
          torch=formulas.conv1d, batching=copies.conv, placement=Placement("layer", {"cnn": 1}, place.place_conv(1), place.rank_is(3))),
    OpDef("conv2d", (X, W, B_OPT), shapes.conv(2), _CONV_HYPER, samples=(
        _S({"x": (2, 3, 5, 5), "weight": (4, 3, 3, 3), "bias": (4,)}),
        _S({"x": (2, 2, 6, 7), "weight": (3, 2, 2, 3)}, {"stride": (2, 1), "padding": (1, 0)}),
        _S({"x": (1, 4, 7, 7), "weight": (4, 2, 3, 3), "bias": (4,)}, {"dilation": 2, "groups": 2, "padding": 1}),
        _S({"x": (2, 3, 6, 6), "weight": (3, 1, 2, 2)}, {"stride": 2, "groups": 3}),
        _S({"x": (1, 2, 5, 6), "weight": (3, 2, 2, 3), "bias": (3,)}, {"padding": "same", "dilation": (2, 1)}),
        _S({"x": (2, 2, 4, 5), "weight": (2, 2, 3, 3)}, {"padding": "valid"}),
        _S({"x": (1, 2, 5, 5), "weight": (2, 2, 3, 3), "bias": (2,)}, {"padding": 1, "padding_mode": "reflect"}),
        _S({"x": (1, 2, 4, 5), "weight": (2, 2, 3, 2)}, {"padding": (2, 1), "padding_mode": "replicate", "stride": 2}),
        _S({"x": (1, 2, 4, 4), "weight": (2, 2, 3, 3)}, {"padding": "same", "padding_mode": "circular"}),
    ), doc="F.conv2d; padding_mode as nn.Conv2d takes it",
          torch=formulas.conv2d, batching=copies.conv, placement=Placement("layer", {"cnn": 0}, place.place_conv(2), place.rank_is(4))),
    OpDef("max_pool2d", (X,), shapes.pool("max_pool2d"),
          {"kernel_size": 2, "stride": None, "padding": 0, "dilation": 1, "ceil_mode": False}, kinks=True,
          branch=kink_rules.max_pool_branch, margin=kink_rules.max_pool_margin,
          subgradient=kink_rules.max_pool_subgradient, samples=(
        _S({"x": (2, 2, 4, 4)}),
        _S({"x": (1, 3, 5, 6)}, {"kernel_size": 3, "stride": 1, "padding": 1}),
        _S({"x": (2, 1, 7, 5)}, {"kernel_size": (3, 2), "stride": (2, 1)}),
        _S({"x": (1, 2, 6, 7)}, {"kernel_size": 2, "stride": 1, "dilation": 2}),
        _S({"x": (2, 2, 5, 5)}, {"kernel_size": 2, "stride": 2, "ceil_mode": True}),
    ),
          torch=formulas.max_pool2d, batching=copies.per_sample, placement=Placement("layer", {"cnn": 3}, place.place_pool("max_pool2d"), place.spatial)),
    OpDef("avg_pool2d", (X,), shapes.pool("avg_pool2d"),
          {"kernel_size": 2, "stride": None, "padding": 0, "count_include_pad": True, "divisor_override": None,
           "ceil_mode": False}, samples=(
        _S({"x": (2, 2, 4, 4)}),
        _S({"x": (1, 2, 5, 6)}, {"kernel_size": 2, "stride": 2, "ceil_mode": True}),
        _S({"x": (1, 2, 6, 5)}, {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True}),
        _S({"x": (1, 1, 6, 5)}, {"kernel_size": 3, "stride": 2, "padding": 1, "ceil_mode": True,
                                 "count_include_pad": False}),
        _S({"x": (1, 3, 5, 6)}, {"kernel_size": 3, "stride": 1, "padding": 1}),
        _S({"x": (1, 2, 5, 5)}, {"kernel_size": 3, "stride": 2, "padding": 1, "count_include_pad": False}),
        _S({"x": (1, 2, 5, 4)}, {"kernel_size": 2, "stride": 1, "divisor_override": 3}),
        _S({"x": (2, 1, 7, 5)}, {"kernel_size": (3, 2), "stride": (2, 1)}),
    ),
          torch=formulas.avg_pool2d, batching=copies.per_sample, placement=Placement("layer", {"cnn": 2}, place.place_pool("avg_pool2d"), place.spatial)),
    OpDef("global_avg_pool", (X,), shapes.global_pool, samples=(
        _S({"x": (2, 3, 4, 4)}), _S({"x": (3, 2, 5)}),
    ),
          torch=formulas.global_avg_pool, batching=copies.per_sample, placement=Placement("reshape", {"cnn": 0}, place.place_global_avg_pool, place.rank_at_least(3))),
    _activation("relu", 1, kinks=True),
    _activation("leaky_relu", 3, {"negative_slope": 0.01}, kinks=True, settings=({}, {"negative_slope": 0.2}),
                draws={"negative_slope": [0.01, 0.2]}),
    _activation("elu", 4, {"alpha": 1.0}, kinks=True, settings=({}, {"alpha": 0.5}), draws={"alpha": [1.0, 0.5]}),
    # NumPy has no complex erf, so only the tanh form takes the complex step.
    _activation("gelu", 5, {"approximate": "none"}, complex_step=lambda h: h["approximate"] == "tanh",
                settings=({}, {"approximate": "tanh"}), draws={"approximate": ["none", "tanh"]}),
    _activation("sigmoid", 2),
    _activation("tanh", 0),
    # past beta x > threshold softplus is x itself: a kink there (its slope jumps from
    # sigmoid(threshold) to 1), reached when a small threshold is drawn
    _activation("softplus", 6, {"beta": 1.0, "threshold": 20.0}, kinks=True,
                settings=({}, {"beta": 2.0}, {"threshold": 1.0}), draws={"beta": [1.0, 2.0], "threshold": [20.0, 1.0]},
                **_at(lambda beta=1.0, threshold=20.0, **_: (threshold / beta,))),
    _activation("silu", 7),
    _activation("hardtanh", 8, {"min_val": -1.0, "max_val": 1.0}, kinks=True,
                settings=({}, {"min_val": -0.5, "max_val": 0.25}), draws={"max_val": [1.0, 0.5]},
                torch=lambda x, min_val, max_val: formulas.F().hardtanh(x, min_val, max_val),
                branch=lambda x, min_val, max_val: np.stack([np.real(x) > min_val, np.real(x) < max_val]),
                margin=lambda x, min_val, max_val: float(np.min(np.minimum(np.abs(np.real(x) - min_val),
                                                                           np.abs(np.real(x) - max_val)),
                                                                initial=np.inf))),
    # piecewise: kinks (or jumps) at fixed points, judged like relu's at 0
    _activation("relu6", 9, kinks=True, **_at(lambda **_: (0.0, 6.0))),
    _activation("hardsigmoid", 10, kinks=True, **_at(lambda **_: (-3.0, 3.0))),
    _activation("hardswish", 11, kinks=True, **_at(lambda **_: (-3.0, 3.0))),
    _activation("hardshrink", 12, {"lambd": 0.5}, kinks=True, settings=({}, {"lambd": 1.0}),
                draws={"lambd": [0.5, 1.0]}, **_at(lambda lambd=0.5, **_: (-lambd, lambd))),
    _activation("softshrink", 13, {"lambd": 0.5}, kinks=True, settings=({}, {"lambd": 1.0}),
                draws={"lambd": [0.5, 1.0]}, **_at(lambda lambd=0.5, **_: (-lambd, lambd))),
    _activation("threshold", 14, {"threshold": 0.0, "value": 0.0}, kinks=True,
                settings=({}, {"threshold": 0.5, "value": -1.0}),
                draws={"threshold": [0.0, 0.5], "value": [0.0, -1.0]}, **_at(lambda threshold=0.0, **_: (threshold,))),
    _activation("selu", 15, kinks=True),
    _activation("celu", 16, {"alpha": 1.0}, settings=({}, {"alpha": 0.5}), draws={"alpha": [1.0, 0.5]}),
    _activation("mish", 17),
    _activation("softsign", 18, complex_step=False),  # |x| is not analytic
    _activation("tanhshrink", 19),
    _activation("logsigmoid", 20),
    # tensor math, elementwise
    _activation("neg", 21),
    _activation("abs", 22, kinks=True, complex_step=False, torch=formulas.abs_),  # |x| is not analytic
    _activation("clamp", 23, {"min": -1.0, "max": 1.0}, kinks=True, settings=({}, {"min": -0.5, "max": 2.0}),
                draws={"min": [-1.0, -0.5], "max": [1.0, 2.0]}, **_at(lambda min=-1.0, max=1.0, **_: (min, max))),
    OpDef("softmax", (X,), shapes.dim("softmax"), {"dim": -1}, family="normalization", samples=(
        _S({"x": (3, 5)}), _S({"x": (2, 4, 3)}, {"dim": 1}), _S({"x": (6,)}, {"dim": 0}),
    ),
          torch=formulas.softmax, batching=copies.shift_dims("dim"), placement=Placement("normalization", {"mlp": 3, "sequence": 1}, place.place_softmax("softmax"))),
    OpDef("log_softmax", (X,), shapes.dim("log_softmax"), {"dim": -1}, family="normalization", samples=(
        _S({"x": (3, 5)}), _S({"x": (2, 4, 3)}, {"dim": 1}), _S({"x": (6,)}, {"dim": 0}),
    ),
          torch=formulas.log_softmax, batching=copies.shift_dims("dim"), placement=Placement("normalization", {"mlp": 4, "sequence": 2}, place.place_softmax("log_softmax"))),
    OpDef("layer_norm", (X, TensorArg("weight", PARAM, optional=True), B_OPT), shapes.layer_norm,
          {"eps": 1e-5, "normalized_shape": None}, family="normalization", samples=(
        _S({"x": (4, 6), "weight": (6,), "bias": (6,)}),
        _S({"x": (2, 3, 5), "weight": (5,), "bias": (5,)}),
        _S({"x": (2, 3, 4), "weight": (3, 4), "bias": (3, 4)}, {"eps": 1e-3}),
        _S({"x": (3, 5)}, {"normalized_shape": (5,)}), _S({"x": (2, 3, 4)}, {"normalized_shape": (3, 4)}),
        _S({"x": (3, 2, 4), "weight": (4,)}),
    ), init={"weight": {"kind": "normal", "mean": 1.0, "std": 0.3}},
          doc="F.layer_norm over normalized_shape (the weight's shape when there is one); weight and bias optional "
              "(nn.LayerNorm's elementwise_affine=False, bias=False)",
          torch=formulas.layer_norm, spread=kink_rules.layer_norm_spread, batching=copies.trailing, placement=Placement("normalization", {"mlp": 0, "sequence": 0}, place.place_layer_norm)),
    OpDef("batch_norm", (X, W, B), shapes.batch_norm, {"eps": 1e-5}, family="normalization", samples=(
        _S({"x": (6, 3), "weight": (3,), "bias": (3,)}),
        _S({"x": (3, 2, 4, 4), "weight": (2,), "bias": (2,)}),
        _S({"x": (4, 3, 5), "weight": (3,), "bias": (3,)}, {"eps": 1e-3}),
    ), init={"weight": {"kind": "normal", "mean": 1.0, "std": 0.3}},
          torch=formulas.batch_norm, spread=kink_rules.batch_norm_spread, placement=Placement("normalization", {"mlp": 1, "cnn": 0}, place.place_batch_norm, place.per_channel)),
    OpDef("batch_norm_eval", (X, TensorArg("running_mean", CONST), TensorArg("running_var", CONST), W, B),
          shapes.batch_norm_eval, {"eps": 1e-5}, family="normalization", samples=(
        _S({"x": (6, 3), "running_mean": (3,), "running_var": (3,), "weight": (3,), "bias": (3,)},
           init={"running_var": _AWAY_FROM_ZERO}),
        _S({"x": (2, 2, 4, 4), "running_mean": (2,), "running_var": (2,), "weight": (2,), "bias": (2,)}, {"eps": 1e-3},
           init={"running_var": _AWAY_FROM_ZERO}),
    ), init={"weight": {"kind": "normal", "mean": 1.0, "std": 0.3}},
          doc="batch norm in eval mode (training=False): the running statistics, not the batch's",
          torch=formulas.batch_norm_eval,
          placement=Placement("normalization", {"mlp": 8, "cnn": 7}, place.place_batch_norm_eval, place.per_channel)),
    OpDef("rms_norm", (X, W), shapes.rms_norm, {"eps": 1e-6}, family="normalization", samples=(
        _S({"x": (4, 6), "weight": (6,)}), _S({"x": (2, 3, 4), "weight": (3, 4)}, {"eps": 1e-3}),
    ), init={"weight": {"kind": "normal", "mean": 1.0, "std": 0.3}},
          torch=formulas.rms_norm, batching=copies.trailing, placement=Placement("normalization", {"mlp": 5, "sequence": 4}, place.place_rms_norm)),
    OpDef("group_norm", (X, W, B), shapes.group_norm, {"num_groups": 1, "eps": 1e-5}, family="normalization", samples=(
        _S({"x": (2, 4, 3), "weight": (4,), "bias": (4,)}, {"num_groups": 2}),
        _S({"x": (2, 6, 2, 3), "weight": (6,), "bias": (6,)}, {"num_groups": 3}),
        _S({"x": (3, 4, 5), "weight": (4,), "bias": (4,)}),
    ), init={"weight": {"kind": "normal", "mean": 1.0, "std": 0.3}},
          torch=formulas.group_norm, spread=kink_rules.group_norm_spread, batching=copies.per_sample, placement=Placement("normalization", {"cnn": 2, "sequence": 5}, place.place_group_norm)),
    OpDef("instance_norm", (X, W, B), shapes.instance_norm, {"eps": 1e-5}, family="normalization", samples=(
        _S({"x": (2, 3, 5), "weight": (3,), "bias": (3,)}), _S({"x": (2, 2, 3, 3), "weight": (2,), "bias": (2,)}),
    ), init={"weight": {"kind": "normal", "mean": 1.0, "std": 0.3}},
          torch=formulas.instance_norm, spread=kink_rules.instance_norm_spread, batching=copies.per_sample, placement=Placement("normalization", {"cnn": 3, "sequence": 6}, place.place_instance_norm)),
    OpDef("normalize", (X,), shapes.dim("normalize"), {"dim": 1, "eps": 1e-12}, family="normalization", kinks=True,
          branch=_NORM[0], margin=_NORM[1], samples=(
        _S({"x": (3, 5)}), _S({"x": (2, 4, 3)}, {"dim": 2}),
    ), doc="x / max(||x||_2, eps) along dim",
          torch=formulas.normalize, batching=copies.shift_dims("dim"), placement=Placement("normalization", _everywhere(7), place.place_normalize)),
    OpDef("cosine_similarity", (TensorArg("x1"), TensorArg("x2")), shapes.pair_reduce("cosine_similarity", 1),
          {"dim": 1, "eps": 1e-8}, family="structure", kinks=True, branch=_NORM[0], margin=_NORM[1], samples=(
        _S({"x1": (4, 5), "x2": (4, 5)}), _S({"x1": (2, 3, 4), "x2": (2, 3, 4)}, {"dim": 2}),
    ),
          torch=formulas.cosine_similarity, torch_deviates=kink_rules.cosine_similarity_torch_deviation, placement=Placement("branch", _everywhere(5), place.place_pair_reduce("cosine_similarity"))),
    OpDef("pairwise_distance", (TensorArg("x1"), TensorArg("x2")), shapes.pair_reduce("pairwise_distance"),
          {"eps": 1e-6, "keepdim": False}, family="structure", samples=(
        _S({"x1": (4, 5), "x2": (4, 5)}), _S({"x1": (2, 3, 4), "x2": (2, 3, 4)}, {"keepdim": True}),
    ), doc="||x1 - x2 + eps||_2 over the last axis",
          torch=formulas.pairwise_distance, batching=copies.broadcasting, placement=Placement("branch", _everywhere(6), place.place_pair_reduce("pairwise_distance"))),
    OpDef("pixel_shuffle", (X,), shapes.pixel_shuffle, {"upscale_factor": 2}, family="structure", samples=(
        _S({"x": (2, 8, 3, 2)}), _S({"x": (1, 9, 2, 2)}, {"upscale_factor": 3}),
    ),
          torch=formulas.pixel_shuffle, batching=copies.per_sample, placement=Placement("reshape", {"cnn": 2}, place.place_pixel_shuffle)),
    OpDef("pixel_unshuffle", (X,), shapes.pixel_unshuffle, {"downscale_factor": 2}, family="structure", samples=(
        _S({"x": (2, 3, 4, 6)}), _S({"x": (1, 2, 6, 3)}, {"downscale_factor": 3}),
    ),
          torch=formulas.pixel_unshuffle, batching=copies.per_sample, placement=Placement("reshape", {"cnn": 3}, place.place_pixel_unshuffle)),
    OpDef("pad", (X,), shapes.pad, {"pad": (1, 1), "mode": "constant", "value": 0.0}, family="structure", samples=(
        _S({"x": (2, 3, 5)}), _S({"x": (2, 3, 4, 6)}, {"pad": (2, 1, 1, 2), "mode": "reflect"}),
        _S({"x": (2, 3, 4)}, {"pad": (0, 2), "mode": "replicate"}), _S({"x": (2, 3, 4, 5)}, {"pad": (1, 1, 2, 2)}),
        _S({"x": (1, 2, 3, 4)}, {"pad": (1, 2, 2, 0), "mode": "circular"}),
        _S({"x": (2, 4, 3)}, {"pad": (2, 1), "value": 0.5}),
    ), doc="torch's pad: (left, right) of the last axis, then of the one before; constant, reflect, replicate, circular",
          torch=formulas.pad, batching=copies.per_sample, placement=Placement("layer", {"cnn": 5, "sequence": 3}, place.place_pad, place.rank_at_least(3))),
    OpDef("max_pool1d", (X,), shapes.pool1d("max_pool1d"), {"kernel_size": 2, "stride": None, "padding": 0},
          kinks=True, branch=kink_rules.max_pool1d_branch, margin=kink_rules.max_pool1d_margin,
          subgradient=kink_rules.max_pool1d_subgradient, samples=(
        _S({"x": (2, 3, 6)}), _S({"x": (1, 2, 9)}, {"kernel_size": 3, "stride": 2, "padding": 1}),
    ),
          torch=formulas.max_pool1d, batching=copies.per_sample, placement=Placement("layer", {"sequence": 4}, place.place_pool("max_pool1d", 1))),
    OpDef("avg_pool1d", (X,), shapes.pool1d("avg_pool1d"),
          {"kernel_size": 2, "stride": None, "padding": 0, "count_include_pad": True}, samples=(
        _S({"x": (2, 3, 6)}), _S({"x": (1, 2, 9)}, {"kernel_size": 3, "stride": 2, "padding": 1}),
        _S({"x": (1, 2, 7)}, {"kernel_size": 3, "padding": 1, "count_include_pad": False}),
    ),
          torch=formulas.avg_pool1d, batching=copies.per_sample, placement=Placement("layer", {"sequence": 5}, place.place_pool("avg_pool1d", 1))),
    OpDef("adaptive_avg_pool1d", (X,), shapes.adaptive_pool("adaptive_avg_pool1d", 1), {"output_size": 1}, samples=(
        _S({"x": (2, 3, 7)}, {"output_size": 3}), _S({"x": (1, 2, 5)}),
    ),
          torch=formulas.adaptive_avg_pool1d, batching=copies.per_sample, placement=Placement("layer", {"sequence": 6}, place.place_adaptive_pool("adaptive_avg_pool1d", 1))),
    OpDef("adaptive_avg_pool2d", (X,), shapes.adaptive_pool("adaptive_avg_pool2d", 2), {"output_size": 1}, samples=(
        _S({"x": (2, 3, 7, 5)}, {"output_size": (3, 2)}), _S({"x": (1, 2, 4, 4)}, {"output_size": 2}),
    ),
          torch=formulas.adaptive_avg_pool2d, batching=copies.per_sample, placement=Placement("layer", {"cnn": 6}, place.place_adaptive_pool("adaptive_avg_pool2d", 2))),
    OpDef("add", (TensorArg("a"), TensorArg("b")), shapes.broadcast("add"), family="structure", samples=(
        _S({"a": (3, 4), "b": (3, 4)}), _S({"a": (2, 3, 4), "b": (4,)}), _S({"a": (2, 1, 4), "b": (3, 1)}),
    ),
          torch=formulas.add, batching=copies.broadcasting, placement=Placement("branch", _everywhere(0), place.place_binary("add"))),
    OpDef("mul", (TensorArg("a"), TensorArg("b")), shapes.broadcast("mul"), family="structure", samples=(
        _S({"a": (3, 4), "b": (3, 4)}), _S({"a": (2, 3, 4), "b": (4,)}), _S({"a": (2, 1, 4), "b": (3, 1)}),
    ),
          torch=formulas.mul, batching=copies.broadcasting, placement=Placement("branch", _everywhere(1), place.place_binary("mul"))),
    OpDef("sub", (TensorArg("a"), TensorArg("b")), shapes.broadcast("sub"), family="structure", samples=(
        _S({"a": (3, 4), "b": (3, 4)}), _S({"a": (2, 3, 4), "b": (4,)}), _S({"a": (2, 1, 4), "b": (3, 1)}),
    ),
          torch=formulas.sub, batching=copies.broadcasting, placement=Placement("branch", _everywhere(3), place.place_binary("sub"))),
    OpDef("div", (TensorArg("a"), TensorArg("b")), shapes.broadcast("div"), family="structure", samples=(
        _S({"a": (3, 4), "b": (3, 4)}, init={"b": _AWAY_FROM_ZERO}), _S({"a": (2, 3, 4), "b": (4,)}, init={"b": _AWAY_FROM_ZERO}),
        _S({"a": (2, 1, 4), "b": (3, 1)}, init={"b": _AWAY_FROM_ZERO}),
    ), doc="a / b, b kept away from 0 where graphs draw it",
          torch=formulas.div, batching=copies.broadcasting, placement=Placement("branch", _everywhere(4), place.place_divide)),
    # reductions over one dim, keepdim drawn
    *(OpDef(name, (X,), shapes.reduce(name), {"dim": -1, "keepdim": False, **extra}, family="structure", samples=(
        _S({"x": (3, 5)}), _S({"x": (2, 4, 3)}, {"dim": 1, "keepdim": True, **more}), _S({"x": (2, 3, 4)}, {"dim": -2}),
    ),
          torch=getattr(formulas, "sum_" if name == "sum" else name), batching=copies.shift_dims("dim"),
          spread=kink_rules.reduction_spread if corrections else None,
          **({"kinks": True, "branch": kink_rules.std_branch, "margin": kink_rules.std_margin} if name == "std" else {}),
          placement=Placement("reshape", _everywhere(rank), place.place_reduce(name, corrections)))
      for name, rank, extra, more, corrections in (
          ("sum", 2, {}, {}, None), ("mean", 3, {}, {}, None), ("logsumexp", 4, {}, {}, None),
          ("var", 5, {"correction": 1}, {"correction": 0}, [1, 0]),
          ("std", 6, {"correction": 1}, {"correction": 0}, [1, 0]))),
    OpDef("index_select", (X, TensorArg("index", CONST, dtype="int")), shapes.index_select, {"dim": 0},
          family="structure", samples=(
        _S({"x": (4, 3), "index": (5,)}, init={"index": {"kind": "randint", "high": 4}}),
        _S({"x": (2, 5, 3), "index": (3,)}, {"dim": 1}, init={"index": {"kind": "randint", "high": 5}}),
    ), doc="the slices of x along dim that index names (repeats accumulate their gradients)",
          torch=formulas.index_select, placement=Placement("reshape", _everywhere(12), place.place_index_select)),
    OpDef("gather", (X, TensorArg("index", CONST, dtype="int")), shapes.gather, {"dim": -1}, family="structure",
          samples=(
        _S({"x": (3, 5), "index": (3, 4)}, init={"index": {"kind": "randint", "high": 5}}),
        _S({"x": (4, 3, 2), "index": (2, 3, 2)}, {"dim": 0}, init={"index": {"kind": "randint", "high": 4}}),
    ), doc="torch.gather: x's elements along dim at index (repeats accumulate their gradients)",
          torch=formulas.gather, placement=Placement("reshape", _everywhere(13), place.place_gather)),
    OpDef("norm", (X,), shapes.reduce("norm"), {"dim": -1, "p": 2.0, "keepdim": False}, family="structure",
          complex_step=False, samples=(  # |x| is not complex-analytic
        _S({"x": (3, 5)}), _S({"x": (2, 4, 3)}, {"dim": 1, "keepdim": True, "p": 3.0}), _S({"x": (2, 3, 4)}, {"dim": -2}),
    ), doc="the vector p-norm over dim (p 2 or 3: smooth but at the zero vector, which random values miss)",
          torch=formulas.norm, batching=copies.shift_dims("dim"),
          placement=Placement("reshape", _everywhere(11), place.place_norm)),
    OpDef("cumsum", (X,), shapes.dim("cumsum"), {"dim": -1}, family="structure", samples=(
        _S({"x": (3, 5)}), _S({"x": (2, 4, 3)}, {"dim": 1}),
    ),
          torch=formulas.cumsum, batching=copies.shift_dims("dim"), placement=Placement("normalization", _everywhere(5), place.place_cumsum, place.rank_at_least(2))),
    OpDef("transpose", (X,), shapes.transpose, {"dim0": 0, "dim1": 1}, family="structure", samples=(
        _S({"x": (3, 5)}), _S({"x": (2, 4, 3)}, {"dim0": 1, "dim1": 2}),
    ),
          torch=formulas.transpose, batching=copies.shift_dims("dim0", "dim1"), placement=Placement("reshape", _everywhere(6), place.place_transpose, place.rank_at_least(3))),
    OpDef("permute", (X,), shapes.permute, {"dims": (1, 0)}, family="structure", samples=(
        _S({"x": (3, 5)}), _S({"x": (2, 3, 4, 5)}, {"dims": (0, 2, 3, 1)}), _S({"x": (2, 3, 4)}, {"dims": (2, 0, 1)}),
    ),
          torch=formulas.permute, placement=Placement("reshape", _everywhere(7), place.place_permute, place.rank_at_least(3))),
    # activations taking a dim or a weight
    OpDef("softmin", (X,), shapes.dim("softmin"), {"dim": -1}, family="normalization", samples=(
        _S({"x": (3, 5)}), _S({"x": (2, 4, 3)}, {"dim": 1}), _S({"x": (6,)}, {"dim": 0}),
    ),
          torch=formulas.softmin, batching=copies.shift_dims("dim"), placement=Placement("normalization", {"mlp": 6, "sequence": 6}, place.place_softmax("softmin"))),
    OpDef("glu", (X,), shapes.glu, {"dim": -1}, family="activation", samples=(
        _S({"x": (3, 4)}), _S({"x": (2, 6, 3)}, {"dim": 1}),
    ), doc="the first half along dim gated by the sigmoid of the second",
          torch=formulas.glu, batching=copies.shift_dims("dim"), placement=Placement("activation", _everywhere(24), place.place_glu)),
    OpDef("prelu", (X, W), shapes.prelu, family="activation", kinks=True,
          branch=lambda x, weight, **_: kink_rules.sign_branch(x), margin=lambda x, weight, **_: kink_rules.sign_margin(x), subgradient=kink_rules.prelu_subgradient, samples=(
        _S({"x": (3, 4), "weight": (1,)}), _S({"x": (2, 3, 5), "weight": (3,)}), _S({"x": (2, 2, 3, 3), "weight": (2,)}),
    ), init={"weight": {"kind": "normal", "mean": 0.25, "std": 0.1}}, doc="x above 0, weight * x below (one weight a channel)",
          torch=formulas.prelu, placement=Placement("activation", _everywhere(25), place.place_prelu, place.rank_at_least(2))),
    OpDef("concat", (TensorArg("x", variadic=True),), shapes.concat, {"dim": 1}, family="structure", samples=(
        _S({"x": [(2, 3), (2, 4)]}), _S({"x": [(2, 3, 2), (1, 3, 2), (3, 3, 2)]}, {"dim": 0}),
        _S({"x": [(2, 2, 3), (2, 2, 1)]}, {"dim": -1}),
    ),
          torch=formulas.concat, placement=Placement("branch", _everywhere(2), place.place_concat)),
    OpDef("reshape", (X,), shapes.reshape, {"shape": (-1,)}, family="structure", samples=(
        _S({"x": (2, 3, 4)}, {"shape": (6, 4)}), _S({"x": (4, 6)}, {"shape": (2, -1, 3)}),
    ),
          torch=formulas.reshape, batching=copies.reshape, placement=Placement("reshape", {"mlp": 0, "sequence": 1}, place.place_reshape, place.reshapable)),
    OpDef("flatten", (X,), shapes.flatten, {"start_dim": 1, "end_dim": -1}, family="structure", samples=(
        _S({"x": (2, 3, 4, 2)}), _S({"x": (2, 3, 4, 2)}, {"start_dim": 0, "end_dim": 1}),
    ),
          torch=formulas.flatten, batching=copies.shift_dims("start_dim", "end_dim"), placement=Placement("reshape", {"mlp": 1, "cnn": 1, "sequence": 0}, place.place_flatten, place.rank_at_least(3))),
    OpDef("dropout", (X, TensorArg("mask", CONST)), shapes.dropout, {"p": 0.5}, family="structure", samples=(
        _S({"x": (4, 5), "mask": (4, 5)}, {"p": 0.5}, {"mask": {"kind": "mask", "p": 0.5}}),
        _S({"x": (2, 3, 4), "mask": (2, 3, 4)}, {"p": 0.2}, {"mask": {"kind": "mask", "p": 0.2}}),
    ),
          torch=formulas.dropout, batching=copies.broadcasting, placement=Placement("normalization", {"mlp": 2, "cnn": 1, "sequence": 3}, place.place_dropout)),
    OpDef("embedding", (TensorArg("ids", CONST, dtype="int"), TensorArg("table", PARAM)), shapes.embedding,
          {"padding_idx": None}, samples=(
        _S({"ids": (5,), "table": (4, 3)}, init={"ids": {"kind": "randint", "high": 4}}),
        _S({"ids": (3, 6), "table": (5, 2)}, init={"ids": {"kind": "randint", "high": 5}}),
        _S({"ids": (4, 5), "table": (3, 2)}, {"padding_idx": 0}, init={"ids": {"kind": "randint", "high": 3}}),
    ), doc="table[ids]; repeated ids accumulate gradient; the padding_idx row gets none",
          frozen=kink_rules.embedding_padding_row,
          torch=formulas.embedding, placement=Placement("input", {"sequence": 0}, place.place_embedding)),
    OpDef("attention", (TensorArg("q"), TensorArg("k"), TensorArg("v"), TensorArg("attn_mask", CONST, optional=True)),
          shapes.attention, {"causal": False, "scale": None}, samples=(
        _S({"q": (4, 3), "k": (5, 3), "v": (5, 2)}),
        _S({"q": (2, 4, 3), "k": (2, 4, 3), "v": (2, 4, 3)}, {"causal": True}),
        _S({"q": (2, 2, 3, 4), "k": (2, 2, 5, 4), "v": (2, 2, 5, 3)}, {"causal": True}),
        _S({"q": (2, 4, 3), "k": (2, 5, 3), "v": (2, 5, 2), "attn_mask": (4, 5)}, {"scale": 0.3}),
    ), doc="scaled dot-product attention softmax(q k^T * scale + attn_mask) v, scale 1/sqrt(E) by default",
          torch=formulas.attention, batching=copies.broadcasting, placement=Placement("layer", {"sequence": 1}, place.place_attention, place.rank_at_least(2)),
          higher_order=lambda hyper, shapes: len(shapes[0]) < 4),  # 4-d on CPU: a flash kernel, no double backward
    OpDef("mse", (TensorArg("pred"), TensorArg("target")), shapes.pairwise_loss("mse"),
          {"reduction": "mean"}, family="loss", samples=(
        _S({"pred": (4, 3), "target": (4, 3)}), _S({"pred": (5,), "target": (5,)}, {"reduction": "sum"}),
    ),
          torch=formulas.mse, batching=copies.loss, placement=Placement("head", _everywhere(1), place.head_targets("mse"))),
    OpDef("smooth_l1", (TensorArg("pred"), TensorArg("target")), shapes.pairwise_loss("smooth_l1"),
          {"beta": 1.0, "reduction": "mean"}, family="loss", kinks=True,
          branch=kink_rules.smooth_l1_branch, margin=kink_rules.smooth_l1_margin, samples=(
        _S({"pred": (4, 3), "target": (4, 3)}),
        _S({"pred": (6,), "target": (6,)}, {"beta": 0.5, "reduction": "sum"}),
    ),
          torch=formulas.smooth_l1, batching=copies.loss, placement=Placement("head", _everywhere(4), place.head_targets("smooth_l1", betas=True))),
    OpDef("bce_with_logits", (TensorArg("logits"), TensorArg("target")), shapes.pairwise_loss("bce_with_logits"),
          {"reduction": "mean"}, family="loss", samples=(
        _S({"logits": (4, 3), "target": (4, 3)}, init={"target": {"kind": "uniform", "low": 0.0, "high": 1.0}}),
        _S({"logits": (6,), "target": (6,)}, {"reduction": "sum"},
           init={"target": {"kind": "uniform", "low": 0.0, "high": 1.0}}),
    ),
          torch=formulas.bce_with_logits, batching=copies.loss, placement=Placement("head", _everywhere(3), place.head_targets("bce_with_logits", {"kind": "uniform", "low": 0.0, "high": 1.0}))),
    OpDef("cross_entropy", (TensorArg("logits"), TensorArg("target", CONST, dtype="int"),
                            TensorArg("weight", CONST, optional=True)), shapes.cross_entropy,
          {"reduction": "mean", "ignore_index": -100, "label_smoothing": 0.0}, family="loss", samples=(
        _S({"logits": (4, 5), "target": (4,)}, init={"target": {"kind": "randint", "high": 5}}),
        _S({"logits": (6, 3), "target": (6,)}, {"reduction": "sum"}, init={"target": {"kind": "randint", "high": 3}}),
        _S({"logits": (5, 3), "target": (5,)}, {"ignore_index": 1, "label_smoothing": 0.1},
           init={"target": {"kind": "randint", "high": 3, "not_all": 1}}),
        _S({"logits": (5, 4), "target": (5,), "weight": (4,)}, {"label_smoothing": 0.1},
           init={"target": {"kind": "randint", "high": 4}, "weight": _AWAY_FROM_ZERO}),
    ),
          torch=formulas.cross_entropy, batching=copies.cross_entropy, placement=Placement("head", _everywhere(2), place.head_classes("cross_entropy", smoothing=True), place.classes)),
    OpDef("cross_entropy_probs", (TensorArg("logits"), TensorArg("target"), TensorArg("weight", CONST, optional=True)),
          shapes.cross_entropy_probs, {"reduction": "mean", "label_smoothing": 0.0}, family="loss", samples=(
        _S({"logits": (4, 5), "target": (4, 5)}, init={"target": _PROBABILITIES}),
        _S({"logits": (3, 4), "target": (3, 4)}, {"reduction": "sum", "label_smoothing": 0.2},
           init={"target": _PROBABILITIES}),
        _S({"logits": (5, 3), "target": (5, 3), "weight": (3,)}, init={"target": _PROBABILITIES, "weight": _AWAY_FROM_ZERO}),
    ), doc="F.cross_entropy with class probabilities (N, C) as the target (differentiable too): "
           "-sum_c w_c t_c log softmax_c, the mean over rows whatever the weights",
          torch=formulas.cross_entropy_probs, placement=Placement("head", _everywhere(21), place.head_class_probabilities,
                                                                 place.classes)),
    OpDef("l1", (TensorArg("pred"), TensorArg("target")), shapes.pairwise_loss("l1"), {"reduction": "mean"},
          family="loss", kinks=True, complex_step=False, branch=kink_rules.difference_branch, margin=kink_rules.difference_margin,
          samples=(_S({"pred": (4, 3), "target": (4, 3)}), _S({"pred": (6,), "target": (6,)}, {"reduction": "sum"})),
          torch=formulas.l1, batching=copies.loss, placement=Placement("head", _everywhere(5), place.head_targets("l1"))),
    OpDef("huber", (TensorArg("pred"), TensorArg("target")), shapes.pairwise_loss("huber"),
          {"delta": 1.0, "reduction": "mean"}, family="loss", kinks=True, complex_step=False,
          branch=lambda pred, target, delta=1.0, **_: kink_rules.smooth_l1_branch(pred, target, delta),
          margin=lambda pred, target, delta=1.0, **_: kink_rules.smooth_l1_margin(pred, target, delta), samples=(
        _S({"pred": (4, 3), "target": (4, 3)}), _S({"pred": (6,), "target": (6,)}, {"delta": 0.5, "reduction": "sum"}),
    ),
          torch=formulas.huber, batching=copies.loss, placement=Placement("head", _everywhere(6), place.head_with("huber", ("target", "input", None), draws={"delta": [1.0, 0.5]}))),
    OpDef("soft_margin", (X, TensorArg("target", CONST)), shapes.pairwise_loss("soft_margin"), {"reduction": "mean"},
          family="loss", samples=(_S({"x": (4, 3), "target": (4, 3)}, init={"target": _SIGNS}),
                                  _S({"x": (6,), "target": (6,)}, {"reduction": "sum"}, init={"target": _SIGNS})),
          torch=formulas.soft_margin, batching=copies.loss, placement=Placement("head", _everywhere(7), place.head_with("soft_margin", ("y", "const", _SIGNS)))),
    OpDef("kl_div", (X, TensorArg("target", CONST)), shapes.pairwise_loss("kl_div", ("mean", "sum", "batchmean")),
          {"reduction": "mean", "log_target": False}, family="loss", samples=(
        _S({"x": (4, 3), "target": (4, 3)}, init={"target": _PROBABILITIES}),
        _S({"x": (3, 5), "target": (3, 5)}, {"reduction": "batchmean"}, init={"target": _PROBABILITIES}),
        _S({"x": (6,), "target": (6,)}, {"reduction": "sum", "log_target": True}),
    ), doc="the pointwise KL term target (log target - x), x holding log-probabilities",
          torch=formulas.kl_div, placement=Placement("head", _everywhere(8), place.head_kl_div)),
    OpDef("poisson_nll", (X, TensorArg("target", CONST)), shapes.pairwise_loss("poisson_nll"),
          {"log_input": True, "eps": 1e-8, "reduction": "mean"}, family="loss", samples=(
        _S({"x": (4, 3), "target": (4, 3)}, init={"target": _COUNTS}),
        _S({"x": (6,), "target": (6,)}, {"reduction": "sum"}, init={"target": _COUNTS}),
    ), doc="exp(x) - target x (log_input=True, full=False)",
          torch=formulas.poisson_nll, batching=copies.loss, placement=Placement("head", _everywhere(9), place.head_with("poisson_nll", ("t", "const", _COUNTS)))),
    OpDef("gaussian_nll", (X, TensorArg("target"), TensorArg("var")), shapes.pairwise_loss("gaussian_nll"),
          {"eps": 1e-6, "reduction": "mean"}, family="loss", complex_step=False, samples=(
        _S({"x": (4, 3), "target": (4, 3), "var": (4, 3)}, init={"var": _AWAY_FROM_ZERO}),
        _S({"x": (6,), "target": (6,), "var": (6,)}, {"reduction": "sum"}, init={"var": _AWAY_FROM_ZERO}),
    ), doc="0.5 (log var + (x - target)^2 / var), var clamped at eps (full=False)",
          torch=formulas.gaussian_nll, batching=copies.loss, vmap=False, placement=Placement("head", _everywhere(10), place.head_with("gaussian_nll", ("target", "input", None), ("var", "input", _AWAY_FROM_ZERO)))),
    OpDef("margin_ranking", (TensorArg("x1"), TensorArg("x2"), TensorArg("target", CONST)),
          shapes.pairwise_loss("margin_ranking"), {"margin": 0.0, "reduction": "mean"}, family="loss", kinks=True,
          branch=kink_rules.ranking_branch, margin=kink_rules.ranking_margin, samples=(
        _S({"x1": (4, 3), "x2": (4, 3), "target": (4, 3)}, init={"target": _SIGNS}),
        _S({"x1": (6,), "x2": (6,), "target": (6,)}, {"margin": 0.5, "reduction": "sum"}, init={"target": _SIGNS}),
    ), doc="max(0, -target (x1 - x2) + margin), target -1 or 1",
          torch=formulas.margin_ranking, batching=copies.loss, placement=Placement("head", _everywhere(11), place.head_with("margin_ranking", ("x2", "input", None), ("y", "const", _SIGNS), draws={"margin": [0.0, 0.5]}))),
    OpDef("hinge_embedding", (X, TensorArg("target", CONST)), shapes.pairwise_loss("hinge_embedding"),
          {"margin": 1.0, "reduction": "mean"}, family="loss", kinks=True,
          branch=_HINGE[0], margin=_HINGE[1], samples=(
        _S({"x": (4, 3), "target": (4, 3)}, init={"target": _SIGNS}),
        _S({"x": (6,), "target": (6,)}, {"margin": 0.5, "reduction": "sum"}, init={"target": _SIGNS}),
    ), doc="x where target is 1, max(0, margin - x) where it is -1",
          torch=formulas.hinge_embedding, batching=copies.loss, placement=Placement("head", _everywhere(12), place.head_with("hinge_embedding", ("y", "const", _SIGNS), draws={"margin": [1.0, 0.5]}))),
    OpDef("nll", (TensorArg("logp"), TensorArg("target", CONST, dtype="int"), TensorArg("weight", CONST, optional=True)),
          shapes.nll,
          {"reduction": "mean", "ignore_index": -100}, family="loss", samples=(
        _S({"logp": (4, 5), "target": (4,)}, init={"target": {"kind": "randint", "high": 5}}),
        _S({"logp": (6, 3), "target": (6,)}, {"reduction": "sum", "ignore_index": 0},
           init={"target": {"kind": "randint", "high": 3, "not_all": 0}}),
        _S({"logp": (5, 3), "target": (5,)}, {"ignore_index": 2}, init={"target": {"kind": "randint", "high": 3, "not_all": 2}}),
        _S({"logp": (5, 4), "target": (5,), "weight": (4,)}, {"ignore_index": 1},
           init={"target": {"kind": "randint", "high": 4, "not_all": 1}, "weight": _AWAY_FROM_ZERO}),
    ), doc="-weight[target[n]] logp[n, target[n]]; rows at ignore_index count for nothing",
          torch=formulas.nll, batching=copies.cross_entropy, placement=Placement("head", _everywhere(13), place.head_classes("nll"), place.classes)),
    OpDef("ctc", (TensorArg("log_probs"), TensorArg("targets", CONST, dtype="int")), shapes.ctc,
          {"input_lengths": None, "target_lengths": None, "blank": 0, "reduction": "mean"}, family="loss",
          complex_step=False, higher_order=False, vmap=False, terms=kink_rules.ctc_terms, samples=(
        _S({"log_probs": (5, 2, 4), "targets": (2, 2)}, init={"targets": {"kind": "randint", "low": 1, "high": 4}}),
        _S({"log_probs": (6, 3, 3), "targets": (3, 3)}, {"input_lengths": (6, 5, 3), "target_lengths": (3, 1, 0),
                                                         "reduction": "sum"},
           init={"targets": {"kind": "randint", "low": 1, "high": 3}}),
        _S({"log_probs": (4, 2, 5), "targets": (2, 2)}, {"blank": 4, "reduction": "none", "target_lengths": (2, 1)},
           init={"targets": {"kind": "randint", "high": 4}}),
    ), doc="connectionist temporal classification: -log of the total probability of the alignments of each "
           "target (N, S) with log_probs (T, N, C), over input_lengths steps and target_lengths labels",
          torch=formulas.ctc,
          placement=Placement("head", _everywhere(22), place.head_ctc, place.rank_at_least(2))),
    OpDef("multilabel_soft_margin", (X, TensorArg("target", CONST)), shapes.multilabel("multilabel_soft_margin"),
          {"reduction": "mean"}, family="loss", samples=(
        _S({"x": (4, 3), "target": (4, 3)}, init={"target": _LABELS}),
        _S({"x": (3, 5), "target": (3, 5)}, {"reduction": "sum"}, init={"target": _LABELS}),
    ), doc="the mean over classes of binary cross-entropy with logits, 0/1 targets",
          torch=formulas.multilabel_soft_margin, batching=copies.loss, placement=Placement("head", _everywhere(14), place.head_with("multilabel_soft_margin", ("y", "const", _LABELS)), place.classes)),
    # ---------------------------------------------------------------- the wider catalogue
    *(OpDef(f"conv_transpose{nd}d", (X, W, B_OPT), shapes.conv_transpose(nd),
            {"stride": 1, "padding": 0, "output_padding": 0, "groups": 1, "dilation": 1}, samples=samples,
            doc="the VJP of a convolution as a layer: weight (in_channels, out_channels / groups, *kernel)",
            torch=getattr(formulas, f"conv_transpose{nd}d"), batching=copies.per_sample,
            placement=Placement("layer", families, place.place_conv_transpose(nd), place.rank_is(nd + 2) if nd < 3 else place.rank_at_least(4)))
      for nd, families, samples in (
          (1, {"sequence": 7, "cnn": 7}, (
              _S({"x": (2, 3, 5), "weight": (3, 2, 3), "bias": (2,)}),
              _S({"x": (1, 4, 4), "weight": (4, 1, 2)}, {"stride": 2, "padding": 1, "output_padding": 1, "groups": 2}),
              _S({"x": (2, 2, 3), "weight": (2, 3, 2), "bias": (3,)}, {"dilation": 2, "output_padding": 1}))),
          (2, {"cnn": 8}, (
              _S({"x": (2, 3, 3, 4), "weight": (3, 2, 3, 3), "bias": (2,)}),
              _S({"x": (1, 4, 3, 3), "weight": (4, 1, 2, 2)}, {"stride": 2, "padding": 1, "output_padding": 1, "groups": 2}),
              _S({"x": (1, 2, 3, 2), "weight": (2, 2, 2, 3), "bias": (2,)},
                 {"stride": (2, 1), "dilation": (1, 2), "output_padding": (1, 0)}))),
          (3, {"cnn": 20}, (
              _S({"x": (1, 2, 2, 3, 2), "weight": (2, 2, 2, 2, 3), "bias": (2,)}),
              _S({"x": (1, 2, 2, 2, 3), "weight": (2, 1, 2, 1, 2)},
                 {"stride": (2, 1, 2), "padding": (0, 0, 1), "output_padding": (1, 0, 1), "groups": 2}),
              _S({"x": (1, 1, 2, 2, 2), "weight": (1, 2, 2, 2, 2), "bias": (2,)}, {"dilation": (2, 1, 1)}))))),
    OpDef("unfold", (X,), shapes.unfold, {"kernel_size": 2, "dilation": 1, "padding": 0, "stride": 1},
          family="structure", samples=(
        _S({"x": (2, 3, 4, 4)}), _S({"x": (1, 2, 5, 4)}, {"kernel_size": (2, 3), "stride": 2, "padding": 1}),
        _S({"x": (1, 2, 5, 5)}, {"kernel_size": 2, "dilation": 2}),
    ), doc="im2col: (N, C, H, W) -> (N, C kh kw, L), the blocks a convolution reads",
          torch=formulas.unfold, batching=copies.per_sample, placement=Placement("reshape", {"cnn": 8}, place.place_unfold, place.rank_is(4))),
    OpDef("fold", (X,), shapes.fold, {"output_size": (3, 3), "kernel_size": 2, "dilation": 1, "padding": 0, "stride": 1},
          family="structure", samples=(
        _S({"x": (2, 12, 4)}), _S({"x": (1, 8, 10)}, {"output_size": (4, 3), "kernel_size": 2, "stride": (1, 2), "padding": 1}),
    ), doc="col2im, the adjoint of unfold: overlapping blocks add",
          torch=formulas.fold, batching=copies.per_sample, placement=Placement("reshape", {"cnn": 9}, place.place_fold, place.rank_is(4))),
    OpDef("interpolate", (X,), shapes.interpolate, {"size": None, "scale_factor": None, "mode": "nearest",
                                                    "align_corners": None}, family="structure", samples=(
        _S({"x": (2, 3, 4)}, {"scale_factor": 2.0}), _S({"x": (1, 2, 5)}, {"size": 7, "mode": "linear", "align_corners": False}),
        _S({"x": (1, 2, 3, 4)}, {"size": (5, 7), "mode": "bilinear", "align_corners": True}),
        _S({"x": (2, 1, 3, 3)}, {"scale_factor": 1.5, "mode": "bicubic", "align_corners": False}),
        _S({"x": (1, 2, 4, 3)}, {"size": (3, 5), "mode": "nearest-exact"}),
    ), doc="nearest, nearest-exact, linear, bilinear and bicubic resizing; linear in x (one matrix an axis)",
          torch=formulas.interpolate, batching=copies.per_sample, placement=Placement("reshape", {"cnn": 10, "sequence": 8}, place.place_interpolate, place.rank_at_least(3))),
    *(OpDef(name, (X,), shapes.channel_shuffle(name), {"groups": 2}, family="structure", samples=(
        _S({"x": (2, 6, 3)}), _S({"x": (1, 6, 2, 2)}, {"groups": 3}),
    ), doc="channels (groups, C / groups) transposed to (C / groups, groups)",
          torch=getattr(formulas, name), batching=copies.per_sample, placement=Placement("reshape", {"cnn": rank}, place.place_channel_shuffle(name), place.rank_at_least(3)))
      for name, rank in (("channel_shuffle", 11),)),
    OpDef("affine_grid", (TensorArg("theta"),), shapes.affine_grid, {"size": (1, 1, 2, 2), "align_corners": False},
          family="structure", samples=(
        _S({"theta": (2, 2, 3)}, {"size": (2, 3, 4, 3)}), _S({"theta": (1, 2, 3)}, {"size": (1, 1, 3, 2), "align_corners": True}),
        _S({"theta": (2, 3, 4)}, {"size": (2, 1, 2, 3, 2)}),
    ), doc="a spatial transformer's sampling grid: theta (N, 2, 3) or (N, 3, 4) applied to each output position's "
           "base coordinates (x, y[, z], 1) in [-1, 1]",
          torch=formulas.affine_grid, vmap=False, placement=Placement("layer", {"mlp": 7}, place.place_affine_grid, place.rank_is(2))),
    OpDef("grid_sample", (X, TensorArg("grid")), shapes.grid_sample,
          {"mode": "bilinear", "padding_mode": "zeros", "align_corners": False}, family="structure", kinks=True,
          complex_step=False, branch=kink_rules.grid_sample_branch, margin=kink_rules.grid_sample_margin,
          subgradient=kink_rules.grid_sample_subgradient, samples=(
        _S({"x": (1, 2, 3, 4), "grid": (1, 2, 3, 2)}, init={"grid": _GRID}),
        _S({"x": (2, 1, 4, 3), "grid": (2, 3, 2, 2)}, {"padding_mode": "border", "align_corners": True}, init={"grid": _GRID}),
        _S({"x": (1, 2, 3, 3), "grid": (1, 2, 2, 2)}, {"mode": "nearest"}, init={"grid": _GRID}),
    ), doc="x read at each grid point (x, y) in [-1, 1]: bilinear (the grid's gradient jumps at pixel centres) or "
           "nearest; zeros or border outside",
          torch=formulas.grid_sample, higher_order=False, placement=Placement("layer", {"cnn": 22}, place.place_grid_sample, place.rank_is(4))),
    OpDef("bilinear", (TensorArg("x1"), TensorArg("x2"), W, B_OPT), shapes.bilinear, samples=(
        _S({"x1": (4, 3), "x2": (4, 2), "weight": (5, 3, 2), "bias": (5,)}),
        _S({"x1": (2, 3, 2), "x2": (2, 3, 4), "weight": (3, 2, 4)}),
    ), doc="y = x1^T W x2 + b per output feature",
          torch=formulas.bilinear, placement=Placement("layer", {"mlp": 6, "sequence": 9}, place.place_bilinear)),
    OpDef("embedding_bag", (TensorArg("ids", CONST, dtype="int"), TensorArg("table", PARAM),
                            TensorArg("per_sample_weights", optional=True)), shapes.embedding_bag,
          {"offsets": None, "mode": "mean"}, kinks=True, branch=kink_rules.embedding_bag_branch,
          margin=kink_rules.embedding_bag_margin, samples=(
        _S({"ids": (3, 4), "table": (5, 2)}, init={"ids": {"kind": "randint", "high": 5}}),
        _S({"ids": (7,), "table": (4, 3), "per_sample_weights": (7,)}, {"offsets": (0, 2, 2, 5), "mode": "sum"},
           init={"ids": {"kind": "randint", "high": 4}}),
        _S({"ids": (2, 3), "table": (6, 3)}, {"mode": "max"}, init={"ids": {"kind": "randint", "high": 6}}),
    ), doc="a bag of table rows pooled by sum, mean or max: rows of 2-d ids, or 1-d ids cut at offsets",
          higher_order=False, torch=formulas.embedding_bag, placement=Placement("branch", {"mlp": 7}, place.place_embedding_bag, place.rank_is(2))),
    OpDef("pdist", (X,), shapes.pdist, {"p": 2.0}, family="structure", kinks=True, branch=kink_rules.pdist_branch,
          margin=kink_rules.pdist_margin, complex_step=False, samples=(_S({"x": (4, 3)}), _S({"x": (2, 5)})),
          doc="||x_i - x_j||_2 for the rows i < j",
          higher_order=False, torch=formulas.pdist, placement=Placement("reshape", {"mlp": 8}, place.place_pdist, place.rank_is(2))),
    *(OpDef(f"adaptive_max_pool{nd}d", (X,), shapes.adaptive_pool(f"adaptive_max_pool{nd}d", nd), {"output_size": 1},
            kinks=True, branch=kink_rules.adaptive_max_branch, margin=kink_rules.adaptive_max_margin,
            subgradient=kink_rules.adaptive_max_subgradient, samples=samples,
            torch=getattr(formulas, f"adaptive_max_pool{nd}d"), batching=copies.per_sample,
            placement=Placement("layer", families, place.place_adaptive_pool(f"adaptive_max_pool{nd}d", nd) if nd < 3 else place.place_volume("adaptive_max_pool3d"), place.rank_at_least(4) if nd == 3 else (lambda shape: True)))
      for nd, families, samples in (
          (1, {"sequence": 10}, (_S({"x": (2, 3, 7)}, {"output_size": 3}), _S({"x": (1, 2, 5)}))),
          (2, {"cnn": 13}, (_S({"x": (2, 3, 5, 7)}, {"output_size": (2, 3)}), _S({"x": (1, 2, 4, 4)}, {"output_size": 2}))),
          (3, {"cnn": 17}, (_S({"x": (1, 2, 3, 5, 4)}, {"output_size": (2, 3, 2)}), _S({"x": (2, 1, 2, 3, 3)}))))),
    OpDef("adaptive_avg_pool3d", (X,), shapes.adaptive_pool("adaptive_avg_pool3d", 3), {"output_size": 1}, samples=(
        _S({"x": (1, 2, 3, 5, 4)}, {"output_size": (2, 3, 2)}), _S({"x": (2, 1, 4, 2, 3)}, {"output_size": 2}),
    ),
          torch=formulas.adaptive_avg_pool3d, batching=copies.per_sample, placement=Placement("layer", {"cnn": 16}, place.place_volume("adaptive_avg_pool3d"), place.rank_at_least(4))),
    *(OpDef(f"lp_pool{nd}d", (X,), shapes.lp_pool(f"lp_pool{nd}d", nd), {"norm_type": 2.0, "kernel_size": 2, "stride": None},
            kinks=True, branch=kink_rules.lp_pool_branch, margin=kink_rules.lp_pool_margin, complex_step=False,
            samples=samples, doc="(sum of x^p over each window)^(1/p), p = 1 or 2",
            torch=getattr(formulas, f"lp_pool{nd}d"), batching=copies.per_sample,
            placement=Placement("layer", families, place.place_lp_pool(nd)))
      for nd, families, samples in (
          (1, {"sequence": 11}, (_S({"x": (2, 3, 6)}), _S({"x": (1, 2, 7)}, {"norm_type": 1.0, "kernel_size": 3, "stride": 2}))),
          (2, {"cnn": 14}, (_S({"x": (2, 2, 4, 4)}), _S({"x": (1, 3, 5, 4)}, {"norm_type": 1.0, "kernel_size": (3, 2), "stride": 1}))),
          (3, {"cnn": 21}, (_S({"x": (1, 2, 4, 3, 4)}),
                            _S({"x": (2, 1, 3, 4, 3)}, {"norm_type": 1.0, "kernel_size": (2, 3, 2), "stride": 1}))))),
    *(OpDef(f"max_unpool{nd}d", (X, TensorArg("indices", CONST, dtype="int")), shapes.max_unpool(f"max_unpool{nd}d", nd),
            {"kernel_size": 2, "stride": None, "padding": 0, "output_size": None}, samples=samples,
            doc="each value written at its index into a zero plane of its (sample, channel): a max pool's gather "
                "undone (indices distinct within a plane)",
            torch=getattr(formulas, f"max_unpool{nd}d"), placement=Placement("layer", families, place.place_max_unpool(nd)))
      for nd, families, samples in (
          (1, {"sequence": 12}, (_S({"x": (2, 3, 4), "indices": (2, 3, 4)}, init={"indices": {"kind": "distinct", "high": 8}}),
                                 _S({"x": (1, 2, 4), "indices": (1, 2, 4)}, {"kernel_size": 3, "stride": 2, "padding": 1, "output_size": 8},
                                    init={"indices": {"kind": "distinct", "high": 8}}))),
          (2, {"cnn": 23}, (_S({"x": (1, 2, 2, 3), "indices": (1, 2, 2, 3)}, init={"indices": {"kind": "distinct", "high": 24}}),
                            _S({"x": (2, 1, 3, 2), "indices": (2, 1, 3, 2)}, {"kernel_size": (2, 3), "stride": (2, 1), "output_size": (7, 4)},
                               init={"indices": {"kind": "distinct", "high": 28}}))),
          (3, {"cnn": 24}, (_S({"x": (1, 2, 1, 2, 2), "indices": (1, 2, 1, 2, 2)}, init={"indices": {"kind": "distinct", "high": 32}}),
                            _S({"x": (1, 1, 2, 2, 1), "indices": (1, 1, 2, 2, 1)}, {"kernel_size": 3, "stride": 2, "padding": 1},
                               init={"indices": {"kind": "distinct", "high": 9}}))))),
    OpDef("conv3d", (X, W, B_OPT), shapes.conv(3), _CONV_HYPER, samples=(
        _S({"x": (2, 2, 3, 4, 4), "weight": (3, 2, 2, 2, 2), "bias": (3,)}),
        _S({"x": (1, 4, 4, 5, 3), "weight": (2, 2, 2, 3, 1)}, {"stride": (1, 2, 1), "padding": 1, "groups": 2}),
        _S({"x": (1, 1, 5, 5, 5), "weight": (2, 1, 2, 2, 2), "bias": (2,)}, {"dilation": 2}),
        _S({"x": (1, 2, 3, 4, 4), "weight": (2, 2, 2, 3, 2)}, {"padding": "same", "padding_mode": "replicate"}),
    ), doc="a convolution over (D, H, W); padding_mode as nn.Conv3d takes it",
          torch=formulas.conv3d, batching=copies.conv, placement=Placement("layer", {"cnn": 19}, place.place_conv3d, place.rank_at_least(4))),
    OpDef("max_pool3d", (X,), shapes.pool3d, {"kernel_size": 2, "stride": None, "padding": 0}, kinks=True,
          branch=kink_rules.max_pool3d_branch, margin=kink_rules.max_pool3d_margin,
          subgradient=kink_rules.max_pool3d_subgradient, samples=(
        _S({"x": (2, 2, 4, 4, 4)}), _S({"x": (1, 2, 3, 4, 5)}, {"kernel_size": (1, 2, 3), "stride": 1}),
        _S({"x": (1, 1, 3, 4, 4)}, {"kernel_size": 2, "padding": 1}),
    ), doc="the maximum over (D, H, W) windows; a tie may go to any maximum",
          torch=formulas.max_pool3d, batching=copies.per_sample, placement=Placement("layer", {"cnn": 18}, place.place_volume("max_pool3d"), place.rank_at_least(4))),
    OpDef("avg_pool3d", (X,), shapes.pool3d, {"kernel_size": 2, "stride": None, "padding": 0, "count_include_pad": True},
          samples=(
        _S({"x": (2, 2, 4, 4, 4)}), _S({"x": (1, 2, 3, 4, 5)}, {"kernel_size": (1, 2, 3), "stride": 1}),
        _S({"x": (1, 1, 3, 4, 4)}, {"kernel_size": 2, "padding": 1, "count_include_pad": False}),
    ),
          torch=formulas.avg_pool3d, batching=copies.per_sample, placement=Placement("layer", {"cnn": 15}, place.place_volume("avg_pool3d"), place.rank_at_least(4))),
    OpDef("local_response_norm", (X,), shapes.local_response_norm, {"size": 2, "alpha": 1e-4, "beta": 0.75, "k": 1.0},
          family="normalization", samples=(
        _S({"x": (2, 5, 3)}, {"size": 3}), _S({"x": (1, 4, 2, 3)}, {"size": 2, "alpha": 1.0, "k": 2.0}),
        _S({"x": (2, 3, 4)}, {"size": 5, "alpha": 0.5, "beta": 1.5}),
    ), doc="x / (k + alpha / size * sum of x^2 over a window of channels)^beta",
          torch=formulas.local_response_norm, batching=copies.per_sample, placement=Placement("normalization", {"cnn": 4, "sequence": 7}, place.place_local_response_norm, place.rank_at_least(3))),
    OpDef("binary_cross_entropy", (TensorArg("p"), TensorArg("target", CONST)), shapes.pairwise_loss("binary_cross_entropy"),
          {"reduction": "mean"}, family="loss", complex_step=False, kinks=True, branch=kink_rules.bce_branch,
          margin=kink_rules.bce_margin, samples=(
        _S({"p": (4, 3), "target": (4, 3)}, init={"p": {"kind": "uniform", "low": 0.05, "high": 0.95},
                                                   "target": {"kind": "uniform", "low": 0.0, "high": 1.0}}),
        _S({"p": (6,), "target": (6,)}, {"reduction": "sum"}, init={"p": {"kind": "uniform", "low": 0.05, "high": 0.95},
                                                                    "target": _LABELS}),
    ), doc="-(t log p + (1 - t) log(1 - p)) of probabilities p (graphs put a sigmoid first)",
          torch=formulas.binary_cross_entropy, batching=copies.loss, placement=Placement("head", _everywhere(15), place.head_bce)),
    OpDef("cosine_embedding", (TensorArg("x1"), TensorArg("x2"), TensorArg("target", CONST)), shapes.cosine_embedding,
          {"margin": 0.0, "reduction": "mean"}, family="loss", kinks=True, complex_step=False,
          branch=kink_rules.cosine_embedding_branch, margin=kink_rules.cosine_embedding_margin,
          terms=lambda x1, x2, target, margin=0.0, reduction="mean": (1.0 + abs(margin)) * (
              len(target) if reduction == "sum" else np.ones(len(target)) if reduction == "none" else 1.0),
          # each row's 1 - cos (or cos - margin) cancels at 1
          samples=(
        _S({"x1": (4, 3), "x2": (4, 3), "target": (4,)}, init={"target": _SIGNS}),
        _S({"x1": (5, 2), "x2": (5, 2), "target": (5,)}, {"margin": 0.3, "reduction": "sum"}, init={"target": _SIGNS}),
    ), doc="1 - cos(x1, x2) where target is 1, max(0, cos - margin) where it is -1",
          torch=formulas.cosine_embedding, placement=Placement("head", _everywhere(16), place.head_cosine_embedding)),
    *(OpDef(name, (TensorArg("anchor"), TensorArg("positive"), TensorArg("negative")), shapes.triplet(name), hyper,
            family="loss", kinks=True, complex_step=False, branch=kink_rules.triplet_branch,
            margin=kink_rules.triplet_margin_rule, terms=kink_rules.triplet_terms, samples=(
        _S({"anchor": (4, 3), "positive": (4, 3), "negative": (4, 3)}),
        _S({"anchor": (3, 5), "positive": (3, 5), "negative": (3, 5)}, {"margin": 2.0, "swap": True, "reduction": "sum"}),
    ), doc=doc, torch=getattr(formulas, name), placement=Placement("head", _everywhere(rank), place.head_triplet(name)))
      for name, rank, hyper, doc in (
          ("triplet_margin", 17, {"margin": 1.0, "p": 2.0, "eps": 1e-6, "swap": False, "reduction": "mean"},
           "max(0, margin + d(a, p) - d(a, n)), d pairwise_distance; swap: d(a, n) -> min(d(a, n), d(p, n))"),
          ("triplet_margin_with_distance", 18, {"margin": 1.0, "swap": False, "reduction": "mean"},
           "triplet_margin through triplet_margin_with_distance_loss's default distance"))),
    OpDef("multi_margin", (X, TensorArg("target", CONST, dtype="int")), shapes.multi_margin,
          {"p": 1, "margin": 1.0, "reduction": "mean"}, family="loss", kinks=True, complex_step=False,
          branch=kink_rules.multi_margin_branch, margin=kink_rules.multi_margin_margin, samples=(
        _S({"x": (4, 3), "target": (4,)}, init={"target": {"kind": "randint", "high": 3}}),
        _S({"x": (3, 5), "target": (3,)}, {"p": 2, "margin": 0.5, "reduction": "sum"}, init={"target": {"kind": "randint", "high": 5}}),
    ), doc="the multi-class hinge: sum over i != y of max(0, margin - x[y] + x[i])^p / C",
          higher_order=False, torch=formulas.multi_margin, placement=Placement("head", _everywhere(19), place.head_multi_margin, place.classes)),
    OpDef("multilabel_margin", (X, TensorArg("target", CONST, dtype="int")), shapes.multilabel("multilabel_margin"),
          {"reduction": "mean"}, family="loss", kinks=True, complex_step=False,
          branch=kink_rules.multilabel_margin_branch, margin=kink_rules.multilabel_margin_margin, samples=(
        _S({"x": (4, 3), "target": (4, 3)}, init={"target": {"kind": "label_lists"}}),
        _S({"x": (3, 5), "target": (3, 5)}, {"reduction": "sum"}, init={"target": {"kind": "label_lists"}}),
    ), doc="sum over targets j and non-targets i of max(0, 1 - (x[j] - x[i])) / C; a row's targets end at -1",
          higher_order=False, torch=formulas.multilabel_margin, placement=Placement("head", _everywhere(20), place.head_multilabel_margin, place.classes)),
    # recurrent layers over (N, T, D), torch's weight layout and gate order
    *(OpDef(name, (X, *(TensorArg(s) for s in states), TensorArg("w_ih", PARAM), TensorArg("w_hh", PARAM),
                   TensorArg("b_ih", PARAM), TensorArg("b_hh", PARAM)), shapes.recurrent(name, gates, len(states)),
            hyper, kinks=name == "rnn", branch=kink_rules.rnn_branch if name == "rnn" else None,
            margin=kink_rules.rnn_margin if name == "rnn" else None, samples=tuple(
                _S({"x": (2, t, 3), **{s: (2, h) for s in states}, "w_ih": (gates * h, 3), "w_hh": (gates * h, h),
                    "b_ih": (gates * h,), "b_hh": (gates * h,)}, extra) for t, h, extra in samples), doc=doc,
            torch=getattr(formulas, name), placement=Placement("layer", {"sequence": rank}, place.place_recurrent(name, gates, len(states)), place.rank_is(3)))
      for name, gates, states, hyper, rank, samples, doc in (
          ("lstm", 4, ("h0", "c0"), {}, 12, ((3, 4, {}), (1, 2, {})),
           "an LSTM over the sequence: gates input, forget, cell, output; the hidden state at every step"),
          ("gru", 3, ("h0",), {}, 13, ((3, 4, {}), (2, 2, {})),
           "a GRU over the sequence: gates reset, update, new (the reset gate scales W_hn h + b_hn)"),
          ("rnn", 1, ("h0",), {"nonlinearity": "tanh"}, 14, ((3, 4, {}), (3, 3, {"nonlinearity": "relu"})),
           "an Elman RNN over the sequence, tanh or relu"))),
    # ---------------------------------------------------------------- more tensor math
    OpDef("exp", (X,), shapes.same, family="activation", samples=(_S({"x": (7,)}), _S({"x": (3, 5)})),
          torch=formulas.exp, batching=copies.broadcasting,
          placement=Placement("activation", _everywhere(26), place.place_bounded("exp"))),
    OpDef("pow", (X,), shapes.same, {"exponent": 2.0}, family="activation", samples=(
        _S({"x": (7,)}), _S({"x": (3, 5)}, {"exponent": 3.0}),
    ), torch=formulas.pow_, batching=copies.broadcasting,
          placement=Placement("activation", _everywhere(27), place.place_bounded("pow", exponent=[2.0, 3.0]))),
    *(OpDef(name, (X,), shapes.same, family="activation", samples=(
        _S({"x": (7,)}, init={"x": _AWAY_FROM_ZERO}), _S({"x": (3, 5)}, init={"x": _AWAY_FROM_ZERO}),
    ), doc=f"{name} of a positive input (graphs put a softplus first)",
          torch=getattr(formulas, name), batching=copies.broadcasting, placement=Placement("activation", _everywhere(rank), place.place_positive(name)))
      for name, rank in (("log", 28), ("sqrt", 29), ("rsqrt", 30))),
    *(OpDef(name, (TensorArg("a"), TensorArg("b")), shapes.broadcast(name), family="structure", kinks=True,
            branch=kink_rules.binary_extreme_rule(name == "maximum")[0], margin=kink_rules.binary_extreme_rule(name == "maximum")[1],
            samples=(_S({"a": (3, 4), "b": (3, 4)}), _S({"a": (2, 3, 4), "b": (4,)})),
            doc=f"elementwise {name[:3]} of a and b; a tie splits the gradient",
            torch=getattr(formulas, name), batching=copies.broadcasting, placement=Placement("branch", _everywhere(rank), place.place_binary(name)))
      for name, rank in (("maximum", 8), ("minimum", 9))),
    OpDef("where", (X, TensorArg("mask", CONST), TensorArg("other")), shapes.where, family="structure", samples=(
        _S({"x": (3, 4), "mask": (3, 4), "other": (3, 4)}, init={"mask": _LABELS}),
        _S({"x": (2, 3, 4), "mask": (3, 4), "other": (4,)}, init={"mask": _LABELS}),
    ), doc="x where a constant 0/1 mask is 1, other where it is 0",
          torch=formulas.where, batching=copies.broadcasting, placement=Placement("branch", _everywhere(10), place.place_where)),
    *(OpDef(name, (X,), shapes.reduce(name), {"dim": -1, "keepdim": False}, family="structure", kinks=True,
            branch=kink_rules.reduce_extreme_rule(name == "amax")[0], margin=kink_rules.reduce_extreme_rule(name == "amax")[1],
            samples=(_S({"x": (3, 5)}), _S({"x": (2, 4, 3)}, {"dim": 1, "keepdim": True}), _S({"x": (2, 3, 4)}, {"dim": -2})),
            doc="the largest (smallest) value along dim; a tie spreads the gradient evenly",
            torch=getattr(formulas, name), batching=copies.shift_dims("dim"), placement=Placement("reshape", _everywhere(rank), place.place_reduce(name)))
      for name, rank in (("amax", 8), ("amin", 9))),
    OpDef("cumprod", (X,), shapes.dim("cumprod"), {"dim": -1}, family="structure", samples=(
        _S({"x": (3, 5)}), _S({"x": (2, 4, 3)}, {"dim": 1}),
    ), doc="the running product along dim; its VJP needs no division, so zeros are fine",
          torch=formulas.cumprod, batching=copies.shift_dims("dim"), placement=Placement("normalization", _everywhere(8), place.place_cumprod, place.rank_at_least(2))),
    OpDef("stack", (TensorArg("x", variadic=True),), shapes.stack, {"dim": 0}, family="structure", samples=(
        _S({"x": [(2, 3), (2, 3)]}), _S({"x": [(2, 3, 2), (2, 3, 2), (2, 3, 2)]}, {"dim": 2}),
    ), doc="tensors of one shape along a new axis",
          torch=formulas.stack, placement=Placement("branch", _everywhere(11), place.place_stack)),
    OpDef("slice", (X,), shapes.slice_, {"dim": 0, "start": 0, "end": None, "step": 1}, family="structure", samples=(
        _S({"x": (5, 3)}, {"start": 1, "end": 4}), _S({"x": (2, 7, 3)}, {"dim": 1, "start": -5, "step": 2}),
        _S({"x": (2, 3, 6)}, {"dim": -1, "end": -2}), _S({"x": (4, 3)}, {"dim": 1, "start": 1, "end": 9}),
    ), doc="x[..., start:end:step, ...] along dim (Python's slice rules; the rest of x gets no gradient)",
          torch=formulas.slice_, batching=copies.shift_dims("dim"),
          placement=Placement("reshape", _everywhere(14), place.place_slice)),
    OpDef("einsum", (TensorArg("operands", variadic=True),), shapes.einsum, {"equation": "ij,jk->ik"},
          family="structure", samples=(
        _S({"operands": [(3, 4), (4, 5)]}), _S({"operands": [(2, 3, 4), (2, 4, 2)]}, {"equation": "bij,bjk->bik"}),
        _S({"operands": [(3, 4), (3, 4)]}, {"equation": "bi,bi->b"}), _S({"operands": [(3, 4)]}, {"equation": "ij->ji"}),
        _S({"operands": [(2, 2, 3, 4), (2, 2, 5, 4)]}, {"equation": "bhqd,bhkd->bhqk"}),
        _S({"operands": [(3,), (4,)]}, {"equation": "i,j->ij"}), _S({"operands": [(2, 3, 4)]}, {"equation": "bij->bj"}),
        _S({"operands": [(2, 3), (3, 4), (4, 2)]}, {"equation": "ij,jk,kl->il"}),
    ), doc="torch.einsum of an explicit equation (letters, none twice in one operand, no ellipsis): products "
           "summed over the letters the output drops",
          torch=formulas.einsum, placement=Placement("branch", _everywhere(12), place.place_einsum)),
    OpDef("weighted_sum", (X, TensorArg("weight", CONST)), shapes.weighted_sum, family="loss",
          samples=(_S({"x": (3, 4), "weight": (3, 4)}),),
          doc="sum(x * weight) with a fixed weight: the probe head of single-op graphs",
          torch=formulas.weighted_sum, placement=Placement("head", _everywhere(0), place.head_probe)),
]

for _op in _OPS:
    register_op(_op)
    _BUILTIN.add(_op.name)
del _op

BUILTIN_OPS = frozenset(_BUILTIN)  # before any user declares an op
