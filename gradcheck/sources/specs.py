"""Source specs: one line naming a source and every setting it was run with, as
replay files store them.  ``source.spec`` writes one; ``parse_source`` reads it."""

from __future__ import annotations

from .finite_differences import FiniteDifferences
from .reference import ReferenceOrFormula, ReferenceSource

__all__ = ["parse_source"]


def parse_source(spec: str, candidate=None):
    """The source a spec names: ``reference``, ``reference:float64``,
    ``reference-or-formula``, ``torch:cpu:float32``,
    ``fd:central:auto:n=4,seed=0,full=2000,bisect=4096(<spec>)``,
    ``hvp:seed=0(<spec>)`` (Hessian-vector products by double backward; ``hvp-fd``
    by differences of the first-order gradients), or one of
    ``candidate``'s: ``candidate:numpy``, ``candidate:torch:cpu:float32``,
    ``candidate:engine``.  A spec never names code to load: a candidate's
    source needs the ``Candidate`` itself, given by the caller."""
    spec = spec.strip()
    if spec == "reference-or-formula" or spec.startswith("reference-or-formula:"):
        _, _, dtype = spec.partition(":")
        return ReferenceOrFormula(dtype or "float64")
    if spec == "reference" or spec.startswith("reference:"):
        _, _, dtype = spec.partition(":")
        return ReferenceSource(compute_dtype=dtype or None)
    if spec.startswith("torch:"):
        from .torch_autograd import TorchSource  # torch is imported only for a torch source

        parts = spec.split(":")
        device = ":".join(parts[1:-1]) or "cpu"
        return TorchSource(device=device, dtype=parts[-1])
    if spec.startswith("fd:") and spec.endswith(")") and "(" in spec:
        head, inner = spec[3:-1].split("(", 1)
        method, _, rest = head.partition(":")
        mode, _, settings = rest.partition(":")
        kw = {}
        for item in filter(None, settings.split(",")):
            key, _, value = item.partition("=")
            names = {"n": "n_directions", "seed": "seed", "full": "full_limit", "bisect": "bisect_above"}
            if key not in names:
                raise ValueError(f"cannot read source spec {spec!r}: unknown setting {key!r}")
            kw[names[key]] = None if value == "case" else int(value)
        return FiniteDifferences(parse_source(inner, candidate), method, mode or "full", **kw)
    if (spec.startswith("hvp:") or spec.startswith("hvp-fd:")) and spec.endswith(")") and "(" in spec:
        from .hessian import HessianVector

        head, inner = spec[:-1].split("(", 1)
        kind, _, setting = head.partition(":")
        key, _, value = setting.partition("=")
        if key != "seed" or not value.isdigit():
            raise ValueError(f"cannot read source spec {spec!r}: expected {kind}:seed=N(<source spec>)")
        return HessianVector(parse_source(inner, candidate), seed=int(value), differences=kind == "hvp-fd")
    if spec.startswith("candidate:"):
        if candidate is None:
            raise ValueError(f"source {spec!r} runs a candidate's code: give the candidate (--candidate TARGET)")
        from .candidate import candidate_source

        return candidate_source(spec, candidate)
    raise ValueError(f"cannot read source spec {spec!r}")
