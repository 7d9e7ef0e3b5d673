"""Gradient sources: anything that gives a graph's loss and the gradient of every
differentiable leaf.  Analytic sources (the NumPy reference, torch autograd, a
candidate) also give every node's forward output; ``FiniteDifferences`` wraps any
source's forward and differentiates it numerically.  The torch source is in
``gradcheck.sources.torch_autograd`` (torch loads only when it is used).
"""

from .base import ANALYTIC, Source, SourceResult, Unsupported
from .finite_differences import FiniteDifferences
from .reference import ReferenceOrFormula, ReferenceSource
from .specs import parse_source

__all__ = ["Source", "SourceResult", "Unsupported", "ANALYTIC", "ReferenceSource", "ReferenceOrFormula",
           "FiniteDifferences", "parse_source"]
