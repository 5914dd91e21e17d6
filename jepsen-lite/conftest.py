"""Make ``jepsen_lite`` importable when pytest runs ``jepsen-lite/tests`` from the repository root."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


import pytest  # noqa: E402


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Expose each phase's report as ``item.rep_<phase>`` (fixtures keep run directories of failed tests)."""
    outcome = yield
    setattr(item, f"rep_{call.when}", outcome.get_result())
