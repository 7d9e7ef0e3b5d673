"""The suite lives in gradcheck/suites/test_higher_order.py, so it installs with the package."""

from gradcheck.suites.test_higher_order import *  # noqa: F401,F403
