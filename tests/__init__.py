"""The test suite (a package, so ``tests.support`` imports the same way for pytest and mypy)."""
