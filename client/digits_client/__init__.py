"""digits-client: the digits.v1 clients (sync and asyncio) and the `digits` command.

For example:

    from digits_client import DigitsClient

    with DigitsClient("localhost:8001") as client:
        [result] = client.classify(["seven.png"])
        print(result.digit, result.confidence, result.is_digit)
"""

from digits_client.client import (
    AsyncDigitsClient,
    Classification,
    DigitsClient,
    DigitsError,
    ModelSummary,
    Security,
)

__all__ = [
    "AsyncDigitsClient",
    "Classification",
    "DigitsClient",
    "DigitsError",
    "ModelSummary",
    "Security",
]
