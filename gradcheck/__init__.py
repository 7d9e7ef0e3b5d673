"""gradcheck: tells you, with evidence, whether a backward pass is right.

    >>> from gradcheck import Case, FiniteDifferences, ReferenceSource, check_pair, op_cases
    >>> ref = ReferenceSource()
    >>> records = check_pair(op_cases("conv2d")[0], ref, FiniteDifferences(ref, "central"))
    >>> {r.status for r in records}
    {'pass'}
"""

from .candidates import Candidate, CandidateError, load_candidate
from .check import Case, check_pair, op_cases
from .compare import TOLERANCES, CheckRecord, Tolerance, compare, tolerance_for
from .graph import Graph, GraphBuilder, GraphError, Leaf, Node, materialize, single_op_graph
from .ops import CATALOGUE, OpDef, Sample, TensorArg, get_op, register_op
from .sources import FiniteDifferences, ReferenceSource, SourceResult, Unsupported

__all__ = [
    "CATALOGUE", "Candidate", "CandidateError", "load_candidate", "Case", "CheckRecord", "FiniteDifferences", "Graph", "GraphBuilder", "GraphError", "Leaf",
    "Node", "OpDef", "ReferenceSource", "Sample", "SourceResult", "TOLERANCES", "TensorArg", "Tolerance",
    "TorchSource", "Unsupported", "check_pair", "compare", "get_op", "materialize", "op_cases", "register_op",
    "single_op_graph", "tolerance_for",
]


def __getattr__(name):
    # torch loads only when its source is asked for.
    if name == "TorchSource":
        from .backends.torch_autograd import TorchSource

        return TorchSource
    raise AttributeError(f"module 'gradcheck' has no attribute {name!r}")
