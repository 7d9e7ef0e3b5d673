"""Coverage as data: every public function of ``torch.nn.functional``, with the
catalogue op that covers it or the reason it is not covered.

``FUNCTIONAL`` is the table; ``coverage_rows()`` checks it against the
catalogue and against the torch that is installed (a function torch gained is
listed as unknown, so the table cannot fall behind silently);
``coverage_markdown()`` renders it for the README (``gradcheck catalogue
--coverage`` prints it).  tests/test_coverage.py keeps the README's copy, and
every op the table calls covered, true.
"""

from __future__ import annotations

__all__ = ["FUNCTIONAL", "NOT_YET", "coverage_rows", "coverage_markdown"]

NOT_YET = "not yet in the catalogue"
_IN_PLACE = "the in-place form of {}: the same derivative, checked there"
_HELPER = "a helper of torch's dispatch or argument parsing, not a differentiable function"
_RANDOM = "random in its forward (a mask or a draw of its own); dropout's mask is a constant leaf, this one is not yet"
_ALIAS = "a deprecated alias torch implements as {}: covered there"
_INDICES = "{} that also returns the argmax indices (integers: nothing to differentiate in them)"

# torch.nn.functional name -> the catalogue op covering it, or ("", why not)
FUNCTIONAL: dict[str, str | tuple[str, str]] = {
    # layers
    "linear": "linear", "bilinear": "bilinear", "conv1d": "conv1d", "conv2d": "conv2d", "conv3d": "conv3d",
    "conv_transpose1d": "conv_transpose1d", "conv_transpose2d": "conv_transpose2d", "conv_transpose3d": "conv_transpose3d",
    "conv_tbc": ("", "conv1d with the (time, batch, channel) layout: conv1d covers its arithmetic"),
    "embedding": "embedding", "embedding_bag": "embedding_bag", "unfold": "unfold", "fold": "fold",
    "pixel_shuffle": "pixel_shuffle", "pixel_unshuffle": "pixel_unshuffle", "channel_shuffle": "channel_shuffle",
    "native_channel_shuffle": ("", "torch implements no derivative for it (channel_shuffle is its differentiable form)"),
    "interpolate": "interpolate", "upsample": ("", _ALIAS.format("interpolate(input, size, scale_factor, mode, align_corners)")),
    "upsample_bilinear": ("", _ALIAS.format("interpolate(..., mode='bilinear', align_corners=True)")),
    "upsample_nearest": ("", _ALIAS.format("interpolate(..., mode='nearest')")), "pad": "pad",
    "grid_sample": "grid_sample", "affine_grid": "affine_grid",
    "scaled_dot_product_attention": "attention",
    "multi_head_attention_forward": ("", "a whole module's forward (projections, attention, output): its parts are "
                                         "linear and attention, and check(nn.MultiheadAttention) checks it whole"),
    "grouped_mm": ("", "a grouped matmul kernel for CUDA mixtures of experts; matmul covers its arithmetic"),
    "scaled_mm": ("", "a float8 CUDA matmul with scales; not a float64 function to difference"),
    "scaled_grouped_mm": ("", "a float8 CUDA grouped matmul; not a float64 function to difference"),
    "linear_cross_entropy": ("", "linear then cross_entropy fused; both are in the catalogue"),
    # pooling
    "max_pool1d": "max_pool1d", "max_pool2d": "max_pool2d", "max_pool3d": "max_pool3d",
    "max_pool1d_with_indices": ("", _INDICES.format("max_pool1d")),
    "max_pool2d_with_indices": ("", _INDICES.format("max_pool2d")),
    "max_pool3d_with_indices": ("", _INDICES.format("max_pool3d")),
    "avg_pool1d": "avg_pool1d", "avg_pool2d": "avg_pool2d", "avg_pool3d": "avg_pool3d",
    "adaptive_avg_pool1d": "adaptive_avg_pool1d", "adaptive_avg_pool2d": "adaptive_avg_pool2d", "adaptive_avg_pool3d": "adaptive_avg_pool3d",
    "adaptive_max_pool1d": "adaptive_max_pool1d", "adaptive_max_pool2d": "adaptive_max_pool2d",
    "adaptive_max_pool3d": "adaptive_max_pool3d",
    "adaptive_max_pool1d_with_indices": ("", _INDICES.format("adaptive_max_pool1d")),
    "adaptive_max_pool2d_with_indices": ("", _INDICES.format("adaptive_max_pool2d")),
    "adaptive_max_pool3d_with_indices": ("", _INDICES.format("adaptive_max_pool3d")),
    "lp_pool1d": "lp_pool1d", "lp_pool2d": "lp_pool2d", "lp_pool3d": "lp_pool3d",
    "fractional_max_pool2d": ("", _RANDOM), "fractional_max_pool3d": ("", _RANDOM),
    "fractional_max_pool2d_with_indices": ("", _RANDOM), "fractional_max_pool3d_with_indices": ("", _RANDOM),
    "max_unpool1d": "max_unpool1d", "max_unpool2d": "max_unpool2d", "max_unpool3d": "max_unpool3d",
    # activations
    "relu": "relu", "relu6": "relu6", "leaky_relu": "leaky_relu", "elu": "elu", "selu": "selu", "celu": "celu",
    "gelu": "gelu", "silu": "silu", "mish": "mish", "sigmoid": "sigmoid", "tanh": "tanh", "softplus": "softplus",
    "hardtanh": "hardtanh", "hardsigmoid": "hardsigmoid", "hardswish": "hardswish", "hardshrink": "hardshrink",
    "softshrink": "softshrink", "tanhshrink": "tanhshrink", "softsign": "softsign", "logsigmoid": "logsigmoid",
    "threshold": "threshold", "prelu": "prelu", "glu": "glu", "softmax": "softmax", "softmin": "softmin",
    "log_softmax": "log_softmax", "rrelu": ("", _RANDOM), "gumbel_softmax": ("", _RANDOM),
    "relu_": ("", _IN_PLACE.format("relu")), "elu_": ("", _IN_PLACE.format("elu")),
    "selu_": ("", _IN_PLACE.format("selu")), "celu_": ("", _IN_PLACE.format("celu")),
    "leaky_relu_": ("", _IN_PLACE.format("leaky_relu")), "hardtanh_": ("", _IN_PLACE.format("hardtanh")),
    "threshold_": ("", _IN_PLACE.format("threshold")), "rrelu_": ("", _IN_PLACE.format("rrelu")),
    # normalization
    "batch_norm": "batch_norm", "layer_norm": "layer_norm", "group_norm": "group_norm",
    "instance_norm": "instance_norm", "rms_norm": "rms_norm", "local_response_norm": "local_response_norm",
    "normalize": "normalize",
    # distances
    "cosine_similarity": "cosine_similarity", "pairwise_distance": "pairwise_distance", "pdist": "pdist",
    # dropout
    "dropout": "dropout", "dropout1d": ("", _RANDOM), "dropout2d": ("", _RANDOM), "dropout3d": ("", _RANDOM),
    "alpha_dropout": ("", _RANDOM), "feature_alpha_dropout": ("", _RANDOM),
    # losses
    "mse_loss": "mse", "l1_loss": "l1", "smooth_l1_loss": "smooth_l1", "huber_loss": "huber",
    "binary_cross_entropy_with_logits": "bce_with_logits", "binary_cross_entropy": "binary_cross_entropy",
    "cross_entropy": "cross_entropy", "nll_loss": "nll", "kl_div": "kl_div",
    "poisson_nll_loss": "poisson_nll", "gaussian_nll_loss": "gaussian_nll", "soft_margin_loss": "soft_margin",
    "multilabel_soft_margin_loss": "multilabel_soft_margin", "multilabel_margin_loss": "multilabel_margin",
    "multi_margin_loss": "multi_margin", "margin_ranking_loss": "margin_ranking",
    "hinge_embedding_loss": "hinge_embedding", "cosine_embedding_loss": "cosine_embedding",
    "triplet_margin_loss": "triplet_margin", "triplet_margin_with_distance_loss": "triplet_margin_with_distance",
    "ctc_loss": "ctc",
    # not differentiable functions
    "one_hot": ("", "integer in, integer out: nothing to differentiate"),
    "Optional": ("", _HELPER), "assert_int_or_pair": ("", _HELPER), "boolean_dispatch": ("", _HELPER),
    "handle_torch_function": ("", _HELPER), "has_torch_function": ("", _HELPER),
    "has_torch_function_unary": ("", _HELPER), "has_torch_function_variadic": ("", _HELPER),
}


def _public_functions():
    """The public callables of the installed torch.nn.functional (not classes or
    modules)."""
    import inspect

    import torch.nn.functional as F

    return sorted(n for n in dir(F) if not n.startswith("_") and callable(getattr(F, n))
                  and not inspect.isclass(getattr(F, n)) and not inspect.ismodule(getattr(F, n)))


def coverage_rows():
    """(function, op or "", status, why) for every public function of the
    installed torch.nn.functional and every name in the table; status is
    "covered", "not covered" or "unknown" (in torch, not in the table)."""
    from .opdef import CATALOGUE

    rows = []
    for name in sorted(set(_public_functions()) | set(FUNCTIONAL)):
        entry = FUNCTIONAL.get(name)
        if entry is None:
            rows.append((name, "", "unknown", "in this torch, not in gradcheck/catalogue/coverage.py"))
        elif isinstance(entry, str):
            status = "covered" if entry in CATALOGUE else "unknown"
            rows.append((name, entry, status, "" if status == "covered" else f"op {entry!r} is not in the catalogue"))
        else:
            rows.append((name, "", "not covered", entry[1]))
    return rows


def coverage_markdown() -> str:
    rows = coverage_rows()
    covered = sum(r[2] == "covered" for r in rows)
    lines = [f"{covered} of the {len(rows)} public functions of torch.nn.functional are covered by a catalogue "
             f"op (`gradcheck catalogue --coverage`):", "",
             "| torch.nn.functional | catalogue op | status | why not |", "|---|---|---|---|"]
    lines += [f"| `{n}` | {f'`{op}`' if op else ''} | {status} | {why} |" for n, op, status, why in rows]
    return "\n".join(lines) + "\n"
