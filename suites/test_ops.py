"""The suite lives in gradcheck/suites/test_ops.py, so it installs with the package."""

from gradcheck.suites.test_ops import *  # noqa: F401,F403
