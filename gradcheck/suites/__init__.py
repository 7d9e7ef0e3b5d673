"""The suites: every source op by op and on random architectures, and every
optimizer, checked as ``pytest`` tests.  They ship in the package, so an
installed harness runs them against a candidate without a clone::

    pytest --pyargs gradcheck.suites --candidate mypkg.layers:candidate
    gradcheck test --candidate mypkg.layers:candidate

``suites/`` at the top of the repository holds thin copies that import these,
so ``pytest suites/`` in a clone runs the same tests."""

__all__: list = []  # test modules, not an API
