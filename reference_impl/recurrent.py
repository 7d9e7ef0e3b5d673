"""Recurrent layers over a sequence (N, T, D), batch first, one layer, one
direction, in torch's weight layout: w_ih (G H, D), w_hh (G H, H), b_ih and b_hh
(G H,), the G gate blocks stacked in torch's order (LSTM: input, forget, cell,
output; GRU: reset, update, new).  The output is the hidden state at every step,
(N, T, H); h0 (and the LSTM's c0) is the initial state (N, H).

The forward keeps every step's gates; the VJP is backpropagation through time,
the steps walked backwards carrying the gradient of the state."""

import numpy as np


def _sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # no overflow for large |x|


def lstm_forward(x, h0, c0, w_ih, w_hh, b_ih, b_hh):
    n, t, _ = x.shape
    hidden = h0.shape[1]
    h, c = h0, c0
    steps, out = [], []
    for s in range(t):
        z = x[:, s] @ w_ih.T + b_ih + h @ w_hh.T + b_hh
        i, f = _sigmoid(z[:, :hidden]), _sigmoid(z[:, hidden:2 * hidden])
        g, o = np.tanh(z[:, 2 * hidden:3 * hidden]), _sigmoid(z[:, 3 * hidden:])
        c_new = f * c + i * g
        tc = np.tanh(c_new)
        steps.append((h, c, i, f, g, o, tc))
        h, c = o * tc, c_new
        out.append(h)
    return np.stack(out, axis=1), (x, w_ih, w_hh, steps)


def lstm_backward(cache, grad):
    x, w_ih, w_hh, steps = cache
    gx = np.zeros(x.shape, dtype=np.result_type(x, grad))
    g_ih, g_hh = np.zeros(w_ih.shape, dtype=gx.dtype), np.zeros(w_hh.shape, dtype=gx.dtype)
    gb = np.zeros(w_ih.shape[0], dtype=gx.dtype)
    dh = np.zeros(steps[0][0].shape, dtype=gx.dtype)  # the gradient reaching h_s from later steps
    dc = np.zeros_like(dh)
    for s in reversed(range(x.shape[1])):
        h_prev, c_prev, i, f, g, o, tc = steps[s]
        dh = dh + grad[:, s]
        do = dh * tc
        dc = dc + dh * o * (1 - tc * tc)
        di, df, dg = dc * g, dc * c_prev, dc * i
        dz = np.concatenate([di * i * (1 - i), df * f * (1 - f), dg * (1 - g * g), do * o * (1 - o)], axis=1)
        gx[:, s] = dz @ w_ih
        g_ih += dz.T @ x[:, s]
        g_hh += dz.T @ h_prev
        gb += dz.sum(axis=0)
        dh = dz @ w_hh
        dc = dc * f
    return gx, dh, dc, g_ih, g_hh, gb, gb.copy()


def gru_forward(x, h0, w_ih, w_hh, b_ih, b_hh):
    # r = sig(W_ir x + b_ir + W_hr h + b_hr), u = sig(... z gates ...),
    # n = tanh(W_in x + b_in + r (W_hn h + b_hn)), h' = (1 - u) n + u h
    hidden = h0.shape[1]
    h = h0
    steps, out = [], []
    for s in range(x.shape[1]):
        a = x[:, s] @ w_ih.T + b_ih
        b = h @ w_hh.T + b_hh
        r = _sigmoid(a[:, :hidden] + b[:, :hidden])
        u = _sigmoid(a[:, hidden:2 * hidden] + b[:, hidden:2 * hidden])
        nn = np.tanh(a[:, 2 * hidden:] + r * b[:, 2 * hidden:])
        steps.append((h, r, u, nn, b[:, 2 * hidden:]))
        h = (1 - u) * nn + u * h
        out.append(h)
    return np.stack(out, axis=1), (x, w_ih, w_hh, steps)


def gru_backward(cache, grad):
    x, w_ih, w_hh, steps = cache
    gx = np.zeros(x.shape, dtype=np.result_type(x, grad))
    g_ih, g_hh = np.zeros(w_ih.shape, dtype=gx.dtype), np.zeros(w_hh.shape, dtype=gx.dtype)
    gb_ih, gb_hh = np.zeros(w_ih.shape[0], dtype=gx.dtype), np.zeros(w_hh.shape[0], dtype=gx.dtype)
    dh = np.zeros(steps[0][0].shape, dtype=gx.dtype)
    for s in reversed(range(x.shape[1])):
        h_prev, r, u, nn, hn = steps[s]
        dh = dh + grad[:, s]
        dn = dh * (1 - u) * (1 - nn * nn)  # through tanh
        du = dh * (h_prev - nn) * u * (1 - u)
        dr = dn * hn * r * (1 - r)
        da = np.concatenate([dr, du, dn], axis=1)  # the x-side pre-activations
        db = np.concatenate([dr, du, dn * r], axis=1)  # the h-side ones: r scales W_hn h + b_hn
        gx[:, s] = da @ w_ih
        g_ih += da.T @ x[:, s]
        gb_ih += da.sum(axis=0)
        g_hh += db.T @ h_prev
        gb_hh += db.sum(axis=0)
        dh = dh * u + db @ w_hh
    return gx, dh, g_ih, g_hh, gb_ih, gb_hh


def rnn_forward(x, h0, w_ih, w_hh, b_ih, b_hh, nonlinearity="tanh"):
    h = h0
    steps, out = [], []
    for s in range(x.shape[1]):
        z = x[:, s] @ w_ih.T + b_ih + h @ w_hh.T + b_hh
        steps.append((h, z))
        h = np.tanh(z) if nonlinearity == "tanh" else np.where(np.real(z) > 0, z, 0)
        out.append(h)
    return np.stack(out, axis=1), (x, w_ih, w_hh, steps, out, nonlinearity)


def rnn_backward(cache, grad):
    x, w_ih, w_hh, steps, out, nonlinearity = cache
    gx = np.zeros(x.shape, dtype=np.result_type(x, grad))
    g_ih, g_hh = np.zeros(w_ih.shape, dtype=gx.dtype), np.zeros(w_hh.shape, dtype=gx.dtype)
    gb = np.zeros(w_ih.shape[0], dtype=gx.dtype)
    dh = np.zeros(steps[0][0].shape, dtype=gx.dtype)
    for s in reversed(range(x.shape[1])):
        h_prev, z = steps[s]
        dh = dh + grad[:, s]
        dz = dh * (1 - out[s] * out[s]) if nonlinearity == "tanh" else np.where(np.real(z) > 0, dh, 0)
        gx[:, s] = dz @ w_ih
        g_ih += dz.T @ x[:, s]
        g_hh += dz.T @ h_prev
        gb += dz.sum(axis=0)
        dh = dz @ w_hh
    return gx, dh, g_ih, g_hh, gb, gb.copy()
