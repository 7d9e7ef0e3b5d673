"""gradcheck: tells you, with evidence, whether a backward pass is right.

    >>> from gradcheck import FiniteDifferences, ReferenceSource, check_pair, op_cases
    >>> ref = ReferenceSource()
    >>> records = check_pair(op_cases("conv2d")[0], ref, FiniteDifferences(ref, "central"))
    >>> {r.status for r in records}
    {'pass'}

The public API is the list below; everything else is internal.  The pipeline,
module by module: catalogue (OpDef records) -> graph, case -> strategies
(Hypothesis) -> sources (reference, finite differences, torch, candidates) ->
judge (tolerance, records, second opinions, check_pair) -> testing, report,
run, cli, pytest_plugin.
"""

from .candidates import Candidate, CandidateError, CandidateLoadError, OpOptions, load_candidate
from .case import DTYPES, Case, materialize, op_cases
from .front import CheckFailed, Records, check, check_numpy, fuzz
from .catalogue import CATALOGUE, OpDef, Placement, Sample, ShapeError, TensorArg, get_op
from .graph import Graph, GraphBuilder, GraphError, Leaf, Node, single_op_graph
from .judge import TOLERANCES, CheckRecord, Tolerance, check_pair, compare, tolerance_for
from .sources import FiniteDifferences, ReferenceOrFormula, ReferenceSource, Source, SourceResult, Unsupported

__all__ = [
    "CATALOGUE", "Candidate", "CandidateError", "CandidateLoadError", "Case", "CheckFailed", "CheckRecord", "DTYPES",
    "Records", "check", "check_numpy", "fuzz",
    "FiniteDifferences", "Graph", "GraphBuilder", "GraphError", "Leaf", "Node", "OpDef", "OpOptions", "Placement",
    "ReferenceOrFormula", "ReferenceSource", "Sample", "ShapeError", "Source", "SourceResult", "TOLERANCES",
    "TensorArg", "Tolerance", "TorchSource", "Unsupported", "check_pair", "compare", "get_op", "load_candidate",
    "materialize", "op_cases", "single_op_graph", "tolerance_for",
]


def __getattr__(name):
    # torch loads only when its source is asked for.
    if name == "TorchSource":
        from .sources.torch_autograd import TorchSource

        return TorchSource
    raise AttributeError(f"module 'gradcheck' has no attribute {name!r}")
