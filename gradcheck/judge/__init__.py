"""Judging: comparing two sources' results under the tolerance model, the second
opinions asked before a failure is reported, and the ``CheckRecord`` that holds
the whole judgement."""

from .check import check_pair, direction_seed, error_record
from .compare import compare
from .record import JOINT, STATUSES, CheckRecord, unjudged, with_opinion
from .tolerance import TOLERANCES, Judgement, Tolerance, coarser_dtype, judge, tolerance_for

__all__ = ["check_pair", "compare", "error_record", "direction_seed", "CheckRecord", "STATUSES", "JOINT",
           "unjudged", "with_opinion", "Tolerance", "TOLERANCES", "tolerance_for", "coarser_dtype", "Judgement",
           "judge"]
