"""The report's plots, drawn by matplotlib and embedded as PNG data.

Per op, a strip plot of log10(error / tolerance) per source pair and dtype, the
tolerance line dashed at 0: failures lie right of it.  An exact zero has no
logarithm: zeros are drawn apart, in a column of their own left of an axis
break, so they never pile up where they would look like small real errors.
Per optimizer, the error / tolerance of each parameter and state buffer against
the step, worst over the trajectories.  Each figure is one savefig of a few
Line2D artists (one per status, not one per point): Note [Report cost] in
page.py.
"""

from __future__ import annotations

import base64
import io
import math

import numpy as np
import pandas as pd

__all__ = ["op_strip", "overview", "optimizer_steps"]

COLOURS = {"pass": "#2e86c1", "fail": "#c0392b", "nondifferentiable": "#7f8c8d"}
DPI = 80


def _figure(width, height):
    """A figure on the Agg canvas, without pyplot (whose import alone costs a second)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return base64.b64encode(buf.getvalue()).decode()


def _text_only():
    import matplotlib

    return matplotlib.rc_context({"text.parse_math": False})  # names are text: a "$" in one is no formula


def _judged(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["status"].isin(list(COLOURS)) & df["ratio"].notna() & np.isfinite(df["ratio"])]


def _strips(groups, labels, width=7.5, row=0.32, left=0.42) -> str:
    """One strip a group (a DataFrame of judged records), log10(ratio) across,
    exact zeros in their own column left of the axis break; base64 PNG."""
    ratios = np.concatenate([g["ratio"].to_numpy(dtype=float) for g in groups])
    nonzero = ratios[ratios > 0]
    lo = math.floor(min(float(np.log10(nonzero.min())), -1.0)) - 0.3 if nonzero.size else -3.0
    hi = max(float(np.log10(nonzero.max())) if nonzero.size else 0.0, 0.0) + 0.5
    zero_x = lo - 0.9  # the column of exact zeros, left of the break
    rng = np.random.default_rng(0)
    points = {s: ([], []) for s in COLOURS}
    for y, g in enumerate(groups):
        r = g["ratio"].to_numpy(dtype=float)
        x = np.where(r > 0, np.log10(np.where(r > 0, r, 1.0)), zero_x)
        jitter = rng.uniform(-0.18, 0.18, len(r))
        for status in COLOURS:
            mask = (g["status"] == status).to_numpy()
            points[status][0].extend(x[mask])
            points[status][1].extend(y + jitter[mask])
    height = 0.75 + row * max(len(groups), 2)
    with _text_only():
        fig = _figure(width, height)
        ax = fig.add_subplot()
        for status, (xs, ys) in points.items():
            if xs:
                ax.plot(xs, ys, "o", ms=3, alpha=0.6, color=COLOURS[status], label=status, linestyle="none")
        ax.axvline(0.0, color="#c0392b", linewidth=1.2, linestyle="--")
        ax.axvspan(zero_x - 0.4, lo - 0.45, color="#f2f3f4", zorder=0)
        ax.axvline(lo - 0.45, color="#aaa", linewidth=0.8)
        ticks = list(range(math.ceil(lo), math.floor(hi) + 1))
        ax.set_xticks([zero_x, *ticks])
        ax.set_xticklabels(["exact 0", *[f"1e{t}" for t in ticks]], fontsize=7)
        ax.set_xlim(zero_x - 0.4, hi)
        ax.set_yticks(range(len(groups)))
        ax.set_yticklabels([label[:60] for label in labels], fontsize=7)
        ax.set_ylim(len(groups) - 0.4, -0.6)  # the first group on top
        ax.set_xlabel("error / tolerance (right of the dashed line fails)", fontsize=7)
        ax.tick_params(axis="y", length=0)
        fig.subplots_adjust(left=left, right=0.98, top=1 - 0.1 / height, bottom=0.55 / height)
        return _png(fig)


def op_strip(df_op: pd.DataFrame, op: str) -> str:
    """The strip plot of one op, a strip per source pair and dtype, as base64
    PNG; "" when nothing of it was judged."""
    judged = _judged(df_op)
    if judged.empty:
        return ""
    groups = list(judged.groupby(["pair", "dtype"], sort=True))
    return _strips([g for _, g in groups], [f"{pair} [{dtype}]" for (pair, dtype), _ in groups])


def overview(df: pd.DataFrame, ops) -> str:
    """Every op in ``ops`` in one figure, a strip each (all its source pairs and
    dtypes together), in the order given: the run at a glance for one savefig."""
    judged = _judged(df)
    by_op = {op: g for op, g in judged.groupby(judged["op"].fillna(""), sort=False)}
    ops = [op for op in ops if op in by_op]
    if not ops:
        return ""
    return _strips([by_op[op] for op in ops], [op or "(whole case)" for op in ops], row=0.15, left=0.25)


def optimizer_steps(df_opt: pd.DataFrame, optimizer: str) -> str:
    """Error / tolerance against the step for each parameter and buffer, worst over
    trajectories (base64 PNG); "" when no step was judged."""
    judged = df_opt[df_opt["status"].isin(list(COLOURS)) & (df_opt["step"] > 0) & df_opt["ratio"].notna()]
    if judged.empty:
        return ""
    worst = judged.groupby(["tensor", "step"])["ratio"].max().reset_index()
    floor = 1e-6
    with _text_only():
        fig = _figure(7.5, 2.6)
        ax = fig.add_subplot()
        for tensor, g in worst.groupby("tensor", sort=True):
            style = "--" if "." in tensor else "-"
            ax.plot(g["step"], np.maximum(g["ratio"].to_numpy(dtype=float), floor), style, marker="o", ms=2.5,
                    linewidth=1, label=tensor[:30])
        ax.axhline(1.0, color="#c0392b", linewidth=1.2, linestyle="--")
        ax.set_yscale("log")
        ax.set_ylim(bottom=floor / 2)
        ax.set_xlabel("step", fontsize=7)
        ax.set_ylabel("error / tolerance", fontsize=7)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6, ncol=3, loc="upper left", frameon=False)
        ax.set_title(f"{optimizer}: parameters (solid) and state buffers (dashed); below 1e-6 drawn at 1e-6",
                     fontsize=7)
        fig.tight_layout()
        return _png(fig)
