"""One real server for the module's tests, on free ports, serving the committed model store."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.server import ServerProcess


@pytest.fixture(scope="session")
def server() -> Iterator[ServerProcess]:
    process = ServerProcess("--max-queue-size", "4096")
    try:
        yield process
    finally:
        process.stop()
