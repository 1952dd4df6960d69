"""Fixtures of the worker's unit tests."""

from __future__ import annotations

import pytest
from agent_kit import FakeServer


@pytest.fixture
def fake() -> FakeServer:
    return FakeServer()
