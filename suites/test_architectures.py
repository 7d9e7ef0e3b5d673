"""The suite lives in gradcheck/suites/test_architectures.py, so it installs with the package."""

from gradcheck.suites.test_architectures import *  # noqa: F401,F403
