"""Fixtures shared by the test modules; plain helper functions live in the helper modules beside them."""
from __future__ import annotations

import pytest

from train_helpers import backfilled_work


@pytest.fixture(scope="session")
def shared_work():
    """(work, raw): one backfilled work directory per test process (train_helpers.backfilled_work);
    tests that change it copy it first (train_helpers.copy_work)."""
    return backfilled_work()
