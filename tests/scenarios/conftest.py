"""The simulations log every cycle of every node; their transcripts and assertions are the record, so the
log is silenced for every test here (it used to be one fixture per file, five copies)."""

from __future__ import annotations

import logging

import pytest


@pytest.fixture(autouse=True)
def _quiet_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.CRITICAL + 1)
