"""Correct layers that take another element of the subdifferential at a kink than
the reference does: relu, leaky_relu and elu use the right-hand slope at exactly
0, max_pool2d sends a tie's gradient to the last maximum of the window, a
bilinear grid_sample written with tent weights max(0, 1 - |p - k|) takes each
tent's left-hand slope, so at a pixel centre the grid's gradient is the left
slope where the reference takes the right (zeros padding only), and a second relu
takes the midpoint 1/2.  Each is right: at an exact kink any element
of the subdifferential is.  The harness must pass them."""

import numpy as np

from gradcheck import Candidate

candidate = Candidate("other-subgradient")


@candidate.op("relu")
class ReLU:
    @staticmethod
    def forward(x):
        mask = x >= 0  # 1 at exactly 0
        return x * mask, mask

    @staticmethod
    def backward(mask, g):
        return (g * mask,)


@candidate.op("leaky_relu")
class LeakyReLU:
    @staticmethod
    def forward(x, negative_slope=0.01):
        slope = np.where(x >= 0, 1.0, negative_slope).astype(x.dtype)
        return x * slope, slope

    @staticmethod
    def backward(slope, g):
        return (g * slope,)


@candidate.op("elu")
class ELU:
    @staticmethod
    def forward(x, alpha=1.0):
        e = np.exp(np.minimum(x, 0))
        return np.where(x >= 0, x, alpha * (e - 1)), (x >= 0, alpha * e)

    @staticmethod
    def backward(saved, g):
        pos, neg_slope = saved
        return (np.where(pos, g, g * neg_slope),)


@candidate.op("max_pool2d")
class MaxPoolLastMaximum:
    @staticmethod
    def forward(x, kernel_size=2, stride=None, padding=0):
        (kh, kw) = (kernel_size, kernel_size) if isinstance(kernel_size, int) else tuple(kernel_size)
        s = kernel_size if stride is None else stride
        (sh, sw) = (s, s) if isinstance(s, int) else tuple(s)
        (ph, pw) = (padding, padding) if isinstance(padding, int) else tuple(padding)
        xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=-np.inf)
        n, c, hp, wp = xp.shape
        oh, ow = (hp - kh) // sh + 1, (wp - kw) // sw + 1
        y = np.empty((n, c, oh, ow), dtype=x.dtype)
        where = np.empty((n, c, oh, ow, 2), dtype=np.int64)
        for i in range(oh):
            for j in range(ow):
                win = xp[:, :, i * sh:i * sh + kh, j * sw:j * sw + kw].reshape(n, c, -1)
                last = win.shape[-1] - 1 - np.argmax(win[..., ::-1], axis=-1)  # the last maximum
                y[:, :, i, j] = np.take_along_axis(win, last[..., None], -1)[..., 0]
                where[:, :, i, j, 0] = i * sh + last // kw
                where[:, :, i, j, 1] = j * sw + last % kw
        return y, (x.shape, (ph, pw), xp.shape, where)

    @staticmethod
    def backward(saved, g):
        shape, (ph, pw), xp_shape, where = saved
        gxp = np.zeros(xp_shape, dtype=g.dtype)
        n, c = shape[:2]
        nn, cc = np.meshgrid(np.arange(n), np.arange(c), indexing="ij")
        for i in range(g.shape[2]):
            for j in range(g.shape[3]):
                np.add.at(gxp, (nn, cc, where[:, :, i, j, 0], where[:, :, i, j, 1]), g[:, :, i, j])
        return (gxp[:, :, ph:ph + shape[2], pw:pw + shape[3]],)


midpoint = Candidate("midpoint-relu")


@midpoint.op("relu")
class ReLUMidpoint:
    @staticmethod
    def forward(x):
        return np.maximum(x, 0), x

    @staticmethod
    def backward(x, g):
        return (g * (0.5 * (1 + np.sign(x))),)  # 1/2 at exactly 0


def _left_slope(d):
    """The left-hand derivative of the tent max(0, 1 - |d|): +1 on (-1, 0], -1 on (0, 1]."""
    return np.where((d > -1) & (d <= 0), 1, np.where((d > 0) & (d <= 1), -1, 0)).astype(d.dtype)


@candidate.op("grid_sample", supports={"mode": ["bilinear"], "padding_mode": ["zeros"]})
class TentGridSample:
    @staticmethod
    def forward(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False):
        n, c, h, w = x.shape

        def pix(g, size):
            return (g + 1) * (size - 1) / 2 if align_corners else ((g + 1) * size - 1) / 2
        px, py = pix(grid[..., 0], w), pix(grid[..., 1], h)
        kx = np.maximum(0, 1 - np.abs(px[..., None] - np.arange(w, dtype=x.dtype)))  # (N, Ho, Wo, W)
        ky = np.maximum(0, 1 - np.abs(py[..., None] - np.arange(h, dtype=x.dtype)))  # (N, Ho, Wo, H)
        out = np.einsum("nijw,nijh,nchw->ncij", kx, ky, x)
        return out, (x, px, py, kx, ky, (w - 1) / 2 if align_corners else w / 2, (h - 1) / 2 if align_corners else h / 2)

    @staticmethod
    def backward(saved, g):
        x, px, py, kx, ky, sx, sy = saved
        n, c, h, w = x.shape
        gx = np.einsum("nijw,nijh,ncij->nchw", kx, ky, g)
        dkx, dky = _left_slope(px[..., None] - np.arange(w, dtype=x.dtype)), _left_slope(py[..., None] - np.arange(h, dtype=x.dtype))
        gpx = np.einsum("nijw,nijh,nchw,ncij->nij", dkx, ky, x, g)
        gpy = np.einsum("nijw,nijh,nchw,ncij->nij", kx, dky, x, g)
        return gx, np.stack([gpx * sx, gpy * sy], axis=-1)
