"""Validating optimizers: trajectories compared step by step against the NumPy
reference, and the properties every optimizer keeps."""

from .properties import check_descent, check_state_round_trip, check_zero_gradient
from .runners import (DECLARED, OPTIMIZERS, NoReference, NumpyStepRunner, OptimizerError, ReferenceRunner,
                      TorchClassRunner, TorchRunner, declare_optimizer, known_optimizers, optimizer_runners,
                      parse_runner, reference_runner)
from .strategies import hyper_strategy, trajectories
from .trajectory import NOISE_FLOOR, Trajectory, compare_trajectories

__all__ = ["OPTIMIZERS", "Trajectory", "ReferenceRunner", "TorchRunner", "NumpyStepRunner", "TorchClassRunner",
           "compare_trajectories", "check_descent", "check_zero_gradient", "check_state_round_trip",
           "optimizer_runners", "parse_runner", "OptimizerError", "hyper_strategy", "trajectories", "NOISE_FLOOR",
           "DECLARED", "NoReference", "declare_optimizer", "known_optimizers", "reference_runner"]
