"""The suite lives in gradcheck/suites/test_optimizers.py, so it installs with the package."""

from gradcheck.suites.test_optimizers import *  # noqa: F401,F403
