"""Fixtures for the browser tests: one studio server and one Chromium per module."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser.harness import RunningStudio, chromium, running_studio


@pytest.fixture(scope="module")
def studio(tiny_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStudio]:
    with running_studio(tiny_data_dir, tmp_path_factory.mktemp("studio")) as srv:
        yield srv


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as b:
        yield b
