"""Fixtures of the remote wrapper's tests (their helpers are in tests/unit/wrapperkit.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from k8smpi_runtime.kubexec import remote
from tests.unit.wrapperkit import claims, kill_all, remove_new_claims

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture
def no_claims_left() -> Iterator[None]:
    """The wrappers' session claims (folders) made in the test are removed afterwards."""
    before = claims()
    yield
    remove_new_claims(before)


@pytest.fixture
def session_id() -> Iterator[str]:
    """A fresh session id; whatever the test left of its session is killed afterwards."""
    sid = remote.new_session_id()
    yield sid
    kill_all(sid)  # never leave processes behind
