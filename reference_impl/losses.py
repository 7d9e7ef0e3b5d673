"""Losses: a scalar from predictions and targets.  ``reduction`` is 'mean' or 'sum';
'none' gives the per-element losses (one a row for the losses of a row), which a
graph uses as a body op, and from which a stack of perturbed copies is reduced
copy by copy."""

import numpy as np

from ._util import is_positive


def _reduce(per_element, reduction):
    if reduction == "mean":
        return per_element.mean(), per_element.size
    if reduction == "sum":
        return per_element.sum(), 1
    if reduction == "none":
        return per_element, 1
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def mse_forward(pred, target, reduction="mean"):
    d = pred - target
    loss, count = _reduce(d**2, reduction)
    return loss, (d, count)


def mse_backward(cache, g):
    d, count = cache
    gp = g * 2 * d / count
    return gp, -gp


def smooth_l1_forward(pred, target, beta=1.0, reduction="mean"):
    d = pred - target
    pos = is_positive(d)
    absd = np.where(pos, d, -d)
    quad = np.real(absd) < beta
    loss, count = _reduce(np.where(quad, 0.5 * d**2 / beta, absd - 0.5 * beta), reduction)
    return loss, (d, pos, quad, beta, count)


def smooth_l1_backward(cache, g):
    d, pos, quad, beta, count = cache
    sign = np.where(pos, 1, -1).astype(d.dtype)  # keep d's dtype: float32 stays float32
    slope = np.where(quad, d / beta, sign)
    gp = g * slope / count
    return gp, -gp


def bce_with_logits_forward(logits, target, reduction="mean"):
    # log(1 + exp(x)) - x t, written per sign of x so exp never overflows.
    x = logits
    pos = is_positive(x)
    softplus = np.where(pos, x, 0) + np.log1p(np.exp(np.where(pos, -x, x)))
    loss, count = _reduce(softplus - x * target, reduction)
    return loss, (x, target, count)


def bce_with_logits_backward(cache, g):
    x, target, count = cache
    with np.errstate(over="ignore"):
        sig = 1.0 / (1.0 + np.exp(-x))
    return g * (sig - target) / count, -g * x / count


def _reduce_kept(per, keep, reduction, row_weight=None):
    """``per`` reduced over the rows ``keep`` marks, and the count its mean
    divides by: the kept rows, or with class weights the kept rows'
    ``row_weight`` (w[target], torch's weighted mean).  A mean over no row is
    NaN, as torch gives."""
    if reduction != "mean":
        return _reduce(per, reduction)
    count = int(keep.sum()) if row_weight is None else float(np.sum(np.where(keep, row_weight, 0)))
    return (per.sum() / count if count else per.sum() * np.nan), count


def cross_entropy_forward(logits, target, weight=None, reduction="mean", ignore_index=-100, label_smoothing=0.0):
    # logits (N, C), integer target (N,): -log softmax(logits)[n, target[n]], mixed
    # with label smoothing eps as (1 - eps) of that plus eps of the mean of -log
    # softmax over the classes; rows whose target is ignore_index count for
    # nothing, and the mean is over the others (torch's conventions).  With class
    # weights w (C,): a row's term is w[target] times its -log p, the smoothing
    # term weighs each class by w, and the mean divides by the kept rows' w[target].
    z = logits - np.max(np.real(logits), axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    keep = target != ignore_index
    rows = np.arange(logits.shape[0])
    t = np.where(keep, target, 0)
    w = np.ones(logits.shape[1], dtype=logp.dtype) if weight is None else weight
    per = -w[t] * logp[rows, t]
    if label_smoothing:
        per = (1 - label_smoothing) * per - label_smoothing * (logp * w).mean(axis=1)
    per = np.where(keep, per, 0)
    loss, count = _reduce_kept(per, keep, reduction, None if weight is None else w[t])
    return loss, (logp, target, count, keep, label_smoothing, weight)


def cross_entropy_backward(cache, g):
    logp, target, count, keep, eps, weight = cache
    c = logp.shape[1]
    w = np.ones(c, dtype=logp.dtype) if weight is None else weight
    rows = np.arange(logp.shape[0])[keep]
    p = np.exp(logp)
    # d/dz of (1 - eps) w_y (-log p_y) + (eps / C) sum_c w_c (-log p_c):
    # (1 - eps) w_y (p - e_y) + (eps / C) (sum(w) p - w)
    grad = (eps / c) * (np.sum(w) * p - w)
    grad[rows] += (1 - eps) * w[target[keep]][:, None] * p[rows]
    grad[rows, target[keep]] -= (1 - eps) * w[target[keep]]
    grad[~keep] = 0
    gx = np.reshape(g, (-1, 1)) * grad / count  # g: a scalar, or one a row (reduction "none")
    return (gx, None) if weight is None else (gx, None, None)


def cross_entropy_probs_forward(logits, target, weight=None, reduction="mean", label_smoothing=0.0):
    # torch's cross_entropy with class probabilities as the target, (N, C) like the
    # logits: a row's term is -sum_c w_c t_c log softmax(logits)_c, t smoothed to
    # (1 - eps) t + eps / C; the mean is over the rows, whatever the weights
    # (unlike class-id targets, whose weighted mean divides by the weights).
    z = logits - np.max(np.real(logits), axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    c = logits.shape[1]
    w = np.ones(c, dtype=logp.dtype) if weight is None else weight
    t = (1 - label_smoothing) * target + label_smoothing / c
    loss, count = _reduce(-(w * t * logp).sum(axis=1), reduction)
    return loss, (logp, t, w, count, label_smoothing, weight is not None)


def cross_entropy_probs_backward(cache, g):
    logp, t, w, count, eps, weighted = cache
    g = np.reshape(g, (-1, 1)) / count  # a scalar, or one a row (reduction "none")
    wt = w * t
    # d/dz of -sum_c wt_c log p_c: p sum(wt) - wt; d/dt_c: -(1 - eps) w_c log p_c
    glogits = g * (np.exp(logp) * wt.sum(axis=1, keepdims=True) - wt)
    gtarget = g * -(1 - eps) * w * logp
    return (glogits, gtarget, None) if weighted else (glogits, gtarget)


def weighted_sum_forward(x, weight):
    # sum(x * weight) with a fixed weight: reduces any output to a scalar whose
    # gradient with respect to x is exactly `weight` (a random cotangent).
    return (x * weight).sum(), (x.shape, weight)


def weighted_sum_backward(cache, g):
    _, weight = cache
    return g * weight, None


def _sigmoid(x):
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-x))


def _softplus(x):
    """log(1 + e^x), per sign of x so exp never overflows."""
    pos = is_positive(x)
    return np.where(pos, x, 0) + np.log1p(np.exp(np.where(pos, -x, x)))


def l1_forward(pred, target, reduction="mean"):
    d = pred - target
    loss, count = _reduce(np.abs(d), reduction)
    return loss, (np.sign(d), count)  # torch's slope at d == 0 is sign(0) = 0


def l1_backward(cache, g):
    sign, count = cache
    gp = g * sign / count
    return gp, -gp


def huber_forward(pred, target, delta=1.0, reduction="mean"):
    # 0.5 d^2 within delta, delta (|d| - 0.5 delta) beyond: smooth_l1 times delta
    d = pred - target
    absd = np.abs(d)
    quad = absd < delta
    loss, count = _reduce(np.where(quad, 0.5 * d**2, delta * (absd - 0.5 * delta)), reduction)
    return loss, (d, quad, delta, count)


def huber_backward(cache, g):
    d, quad, delta, count = cache
    gp = g * np.where(quad, d, delta * np.sign(d)) / count
    return gp, -gp


def soft_margin_forward(x, target, reduction="mean"):
    # log(1 + exp(-y x)) for labels y of -1 or 1
    z = -target * x
    loss, count = _reduce(_softplus(z), reduction)
    return loss, (z, target, count)


def soft_margin_backward(cache, g):
    z, target, count = cache
    return -g * target * _sigmoid(z) / count, None


def kl_div_forward(input, target, reduction="mean", log_target=False):  # noqa: A002 - torch's names
    # the pointwise KL term target (log target - input), input being log-probabilities;
    # with log_target the target is given as log-probabilities too
    if log_target:
        per = np.exp(target) * (target - input)
    else:
        per = target * (np.log(target) - input)
    if reduction == "batchmean":
        loss, count = per.sum() / input.shape[0], input.shape[0]
    else:
        loss, count = _reduce(per, reduction)
    return loss, (input, target, log_target, count)


def kl_div_backward(cache, g):
    input, target, log_target, count = cache  # noqa: A001
    p = np.exp(target) if log_target else target
    return -g * p / count, None


def poisson_nll_forward(input, target, log_input=True, eps=1e-8, reduction="mean"):  # noqa: A002
    # exp(x) - t x (log_input), or x - t log(x + eps); full=False (no Stirling term)
    if log_input:
        with np.errstate(over="ignore"):  # exp(x) past the dtype's range is inf: the case leaves the range
            per = np.exp(input) - target * input
    else:
        per = input - target * np.log(input + eps)
    loss, count = _reduce(per, reduction)
    return loss, (input, target, log_input, eps, count)


def poisson_nll_backward(cache, g):
    input, target, log_input, eps, count = cache  # noqa: A001
    with np.errstate(over="ignore", invalid="ignore"):
        slope = np.exp(input) - target if log_input else 1 - target / (input + eps)
        return g * slope / count, None


def gaussian_nll_forward(input, target, var, eps=1e-6, reduction="mean"):  # noqa: A002
    # 0.5 (log v + (x - t)^2 / v), v = var clamped below at eps; full=False
    v = np.maximum(var, eps)
    d = input - target
    per = 0.5 * (np.log(v) + d**2 / v)
    loss, count = _reduce(per, reduction)
    return loss, (d, v, var >= eps, count)


def gaussian_nll_backward(cache, g):
    d, v, unclamped, count = cache
    gi = g * d / v / count
    gv = g * 0.5 * (1 / v - d**2 / v**2) * unclamped / count
    return gi, -gi, gv


def margin_ranking_forward(x1, x2, target, margin=0.0, reduction="mean"):
    # max(0, -y (x1 - x2) + margin) for labels y of -1 or 1
    z = -target * (x1 - x2) + margin
    active = np.real(z) >= 0  # torch's clamp_min passes the gradient at z == 0
    loss, count = _reduce(np.where(active, z, 0), reduction)
    return loss, (target, active, count)


def margin_ranking_backward(cache, g):
    target, active, count = cache
    g1 = np.where(active, -g * target, 0) / count
    return g1, -g1, None


def hinge_embedding_forward(x, target, margin=1.0, reduction="mean"):
    # x where y == 1, max(0, margin - x) where y == -1
    hinge = np.real(margin - x) >= 0  # torch's clamp_min passes the gradient at margin - x == 0
    per = np.where(target == 1, x, np.where(hinge, margin - x, 0))
    loss, count = _reduce(per, reduction)
    return loss, (target, hinge, count)


def hinge_dtype(target):
    return target.dtype if target.dtype.kind in "fc" else np.float64


def hinge_embedding_backward(cache, g):
    target, hinge, count = cache
    slope = np.where(target == 1, 1.0, np.where(hinge, -1.0, 0.0)).astype(hinge_dtype(target))
    return g * slope / count, None


def nll_forward(logp, target, weight=None, reduction="mean", ignore_index=-100):
    # -logp[n, target[n]] over (N, C) log-probabilities; rows whose target is
    # ignore_index count for nothing, and the mean is over the others.  With
    # class weights w (C,): a row's term is w[target] times that, and the mean
    # divides by the kept rows' w[target] (torch's convention, as cross_entropy).
    keep = target != ignore_index
    rows = np.arange(logp.shape[0])
    t = np.where(keep, target, 0)
    w = np.ones(logp.shape[1], dtype=logp.dtype) if weight is None else weight
    picked = np.where(keep, -w[t] * logp[rows, t], 0)
    loss, count = _reduce_kept(picked, keep, reduction, None if weight is None else w[t])
    return loss, (logp.shape, logp.dtype, target, keep, count, weight)


def nll_backward(cache, g):
    shape, dtype, target, keep, count, weight = cache
    grad = np.zeros(shape, dtype=dtype)
    rows = np.arange(shape[0])[keep]
    grad[rows, target[keep]] = -1.0 if weight is None else -weight[target[keep]]
    gx = np.reshape(g, (-1, 1)) * grad / count
    return (gx, None) if weight is None else (gx, None, None)


def multilabel_soft_margin_forward(x, target, reduction="mean"):
    # -mean over classes of y log sigmoid(x) + (1 - y) log sigmoid(-x), for (N, C)
    # logits and 0/1 targets; then reduced over the N samples
    per_class = target * _softplus(-x) + (1 - target) * _softplus(x)
    loss, count = _reduce(per_class.mean(axis=-1), reduction)
    return loss, (x, target, count * x.shape[-1])


def multilabel_soft_margin_backward(cache, g):
    x, target, count = cache
    return np.expand_dims(g, -1) * (_sigmoid(x) - target) / count, None  # g: a scalar, or one a row


def binary_cross_entropy_forward(p, target, reduction="mean"):
    # -(t log p + (1 - t) log(1 - p)) for probabilities p; torch clamps each log at -100
    with np.errstate(divide="ignore"):  # p of exactly 0 or 1 (a saturated sigmoid): log 0, clamped
        per = -(target * np.maximum(np.log(p), -100.0) + (1 - target) * np.maximum(np.log(1 - p), -100.0))
    loss, count = _reduce(per, reduction)
    return loss, (p, target, count)


def binary_cross_entropy_backward(cache, g):
    p, target, count = cache
    return g * (p - target) / np.maximum(p * (1 - p), 1e-12) / count, None


# torch's cosine_embedding_loss adds it to each squared norm; ATen declares it a C++
# float, so it is 1e-12 rounded to float32 (9.9999999600e-13): at a zero row the
# gradient is x / sqrt(|x|^2 eps), and 1e-12 itself would be 2e-9 off
_EPS_COSINE = float(np.float32(1e-12))


def cosine_embedding_forward(x1, x2, target, margin=0.0, reduction="mean"):
    # 1 - cos(x1, x2) where target is 1, max(0, cos - margin) where it is -1 (rows of (N, D))
    m1 = (x1 * x1).sum(axis=-1) + _EPS_COSINE
    m2 = (x2 * x2).sum(axis=-1) + _EPS_COSINE
    den = np.sqrt(m1 * m2)
    cos = (x1 * x2).sum(axis=-1) / den
    active = np.real(cos - margin) >= 0  # clamp_min passes the gradient at equality
    per = np.where(target == 1, 1 - cos, np.where((target == -1) & active, cos - margin, 0))
    loss, count = _reduce(per, reduction)
    slope = np.where(target == 1, -1.0, np.where((target == -1) & active, 1.0, 0.0)).astype(np.real(cos).dtype)
    return loss, (x1, x2, m1, m2, den, cos, slope, count)


def cosine_embedding_backward(cache, g):
    x1, x2, m1, m2, den, cos, slope, count = cache
    c = (g * slope / count)[..., None]
    g1 = c * (x2 / den[..., None] - cos[..., None] * x1 / m1[..., None])
    g2 = c * (x1 / den[..., None] - cos[..., None] * x2 / m2[..., None])
    return g1, g2, None


def distance(a, b, eps=1e-6):
    # torch's pairwise_distance: ||a - b + eps||_2 over the last axis
    d = a - b + eps
    return np.sqrt((d * d).sum(axis=-1)), d


def triplet_margin_forward(anchor, positive, negative, margin=1.0, p=2.0, eps=1e-6, swap=False, reduction="mean"):
    # max(0, margin + d(a, p) - d(a, n)); with swap, d(a, n) is min(d(a, n), d(p, n))
    d_ap, v_ap = distance(anchor, positive, eps)
    d_an, v_an = distance(anchor, negative, eps)
    d_pn, v_pn = distance(positive, negative, eps)
    # the weight of d(p, n) in min(d(a, n), d(p, n)): 1 where it is smaller, and on a
    # tie torch's min splits the gradient, a half to each
    swapped = (np.where(np.real(d_pn) < np.real(d_an), 1.0, np.where(d_pn == d_an, 0.5, 0.0)) if swap
               else np.zeros(d_an.shape)).astype(np.real(d_an).dtype)
    d_neg = np.where(swapped > 0, d_pn, d_an)
    z = margin + d_ap - d_neg
    active = np.real(z) >= 0
    loss, count = _reduce(np.where(active, z, 0), reduction)
    return loss, ((d_ap, v_ap), (d_an, v_an), (d_pn, v_pn), swapped, active, count)


def triplet_margin_backward(cache, g):
    (d_ap, v_ap), (d_an, v_an), (d_pn, v_pn), swapped, active, count = cache
    c = np.where(active, g / count, 0)[..., None]
    u_ap, u_an, u_pn = v_ap / d_ap[..., None], v_an / d_an[..., None], v_pn / d_pn[..., None]
    s = swapped[..., None]
    ga = c * (u_ap - (1 - s) * u_an)
    gp = c * (-u_ap - s * u_pn)
    gn = c * (s * u_pn + (1 - s) * u_an)
    return ga, gp, gn


def triplet_margin_with_distance_forward(anchor, positive, negative, margin=1.0, swap=False, reduction="mean"):
    # the default distance_function is pairwise_distance: triplet_margin with p=2, eps=1e-6
    return triplet_margin_forward(anchor, positive, negative, margin, 2.0, 1e-6, swap, reduction)


triplet_margin_with_distance_backward = triplet_margin_backward


def multi_margin_forward(x, target, p=1, margin=1.0, reduction="mean"):
    # sum over classes i != y of max(0, margin - x[y] + x[i])^p, over C, per row of (N, C)
    rows = np.arange(x.shape[0])
    z = margin - x[rows, target][:, None] + x
    on = (np.real(z) > 0) & (np.arange(x.shape[1])[None, :] != target[:, None])  # torch: z > 0 strictly
    per = np.where(on, z if p == 1 else z * z, 0).sum(axis=1) / x.shape[1]
    loss, count = _reduce(per, reduction)
    return loss, (x.shape, rows, target, z, on, p, count)


def multi_margin_backward(cache, g):
    shape, rows, target, z, on, p, count = cache
    scale = np.asarray(g) / count / shape[1]  # a scalar, or one per row for reduction='none'
    h = np.where(on, (1.0 if p == 1 else 2 * z), 0) * (scale.reshape(-1, 1) if scale.ndim else scale)
    gx = h.astype(np.result_type(z, g))
    gx[rows, target] -= h.sum(axis=1)
    return gx, None


def label_sets(target):
    """Each row's target classes: its entries up to the first -1."""
    out = []
    for row in target:
        stop = np.flatnonzero(row < 0)
        out.append(row[: stop[0] if stop.size else row.size])
    return out


def multilabel_margin_forward(x, target, reduction="mean"):
    # sum over targets j and non-targets i of max(0, 1 - (x[j] - x[i])), over C
    n, c = x.shape
    is_target = np.zeros((n, c), dtype=bool)
    for r, labels in enumerate(label_sets(target)):
        is_target[r, labels] = True
    # pair (r, j, i): j a target, i not
    z = 1 - x[:, :, None] + x[:, None, :]
    on = is_target[:, :, None] & ~is_target[:, None, :] & (np.real(z) > 0)  # torch: z > 0 strictly
    per = np.where(on, z, 0).sum(axis=(1, 2)) / c
    loss, count = _reduce(per, reduction)
    return loss, (on, c, count)


def multilabel_margin_backward(cache, g):
    on, c, count = cache
    scale = np.asarray(g) / count / c
    w = on * (scale.reshape(-1, 1, 1) if scale.ndim else scale)
    return w.sum(axis=1) - w.sum(axis=2), None


# ---------------------------------------------------------------- ctc_loss
#
# Connectionist temporal classification: log_probs (T, N, C), targets (N, S) of
# class ids (none the blank), each sample n over its first input_lengths[n] steps
# and target_lengths[n] labels.  Its loss is -log of the total probability of the
# alignments: paths over the extended labels (blank, l1, blank, l2, ..., blank)
# that stay or move one on, or two where that skips a blank between two
# different labels.  alpha (paths up to t) and beta (paths from t on), in log
# space, both counting step t's emission, so alpha + beta - emission is the log
# probability of the paths through (t, s), and d loss / d log_probs[t, n, c] is
# minus the share of the probability whose path is at a label c at step t.
# This is the gradient with respect to log_probs as given, whatever they are;
# torch's own adds exp(log_probs), which only a log_softmax's backward before it
# cancels (gradcheck/catalogue/formulas.py takes it out again).


def _ctc_lattice(emit, skip):
    """log alpha and log beta over (T, L) from the emissions (T, L)."""
    steps, width = emit.shape
    alpha, beta = np.full(emit.shape, -np.inf), np.full(emit.shape, -np.inf)
    alpha[0, :2] = emit[0, :2]
    beta[-1, -2:] = emit[-1, -2:]
    none = np.full(2, -np.inf)

    def back(a, k):  # a moved k labels on: a[s - k] at s
        return np.concatenate([none[:k], a])[:width]

    def on(b, k):  # b[s + k] at s
        return np.concatenate([b, none[:k]])[k:]

    later = on(skip, 2).astype(bool)  # s -> s + 2 where s + 2 may be reached by a skip
    for t in range(1, steps):
        a = alpha[t - 1]
        alpha[t] = np.logaddexp(np.logaddexp(a, back(a, 1)), np.where(skip, back(a, 2), -np.inf)) + emit[t]
    for t in range(steps - 2, -1, -1):
        b = beta[t + 1]
        beta[t] = np.logaddexp(np.logaddexp(b, on(b, 1)), np.where(later, on(b, 2), -np.inf)) + emit[t]
    return alpha, beta


def ctc_lengths(steps, n, width, input_lengths=None, target_lengths=None):
    """Each sample's steps and labels: every step and every target column unless given."""
    return ((steps,) * n if input_lengths is None else tuple(input_lengths),
            (width,) * n if target_lengths is None else tuple(target_lengths))


def ctc_forward(log_probs, targets, input_lengths=None, target_lengths=None, blank=0, reduction="mean"):
    steps, n, _ = log_probs.shape
    inputs, labels = ctc_lengths(steps, n, targets.shape[1], input_lengths, target_lengths)
    nll = np.zeros(n, dtype=log_probs.dtype)
    grad = np.zeros(log_probs.shape, dtype=np.float64)  # d nll[i] / d log_probs[:, i]
    for i in range(n):
        ext = np.full(2 * labels[i] + 1, blank)
        ext[1::2] = targets[i, :labels[i]]
        skip = np.zeros(len(ext), dtype=bool)
        skip[2:] = (ext[2:] != blank) & (ext[2:] != ext[:-2])
        emit = np.asarray(log_probs[:inputs[i], i], dtype=np.float64)[:, ext]
        with np.errstate(divide="ignore", invalid="ignore"):
            alpha, beta = _ctc_lattice(emit, skip)
            total = np.logaddexp.reduce(alpha[-1, -2:])
            share = np.exp(alpha + beta - emit - total)  # the probability of the paths through (t, s)
        nll[i] = -total
        np.add.at(grad[:inputs[i], i], (slice(None), ext), -share)
    scale = np.ones(n) if reduction != "mean" else 1.0 / (n * np.maximum(np.asarray(labels), 1))
    if reduction == "mean":
        loss = np.sum(nll * scale)
    elif reduction == "sum":
        loss = nll.sum()
    elif reduction == "none":
        loss = nll
    else:
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    return np.asarray(loss, dtype=log_probs.dtype), (grad.astype(log_probs.dtype), scale, reduction)


def ctc_backward(cache, g):
    grad, scale, reduction = cache
    per = np.broadcast_to(np.asarray(g), scale.shape) * scale  # each sample's share of the loss
    return (grad * per[None, :, None].astype(grad.dtype), None)
