"""The server's event loop, with a selector that can tell whether the loop is quiet.

"Quiet" means that since the loop last waited for I/O, nothing more has arrived: the request
being handled now, the first since the wake, is the only thing the server has to do. Only the
selector knows this, because calls that gRPC has received but not yet handed to a handler are
invisible from Python: under load they wait behind whatever the loop is doing, and a request
that looks alone may have many behind it. The batcher runs a lone request's batch on the loop
only when the loop is quiet (see service.domain.inline).
"""

from __future__ import annotations

import asyncio
import selectors
import weakref
from typing import Any

_selectors: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, QuietSelector] = (
    weakref.WeakKeyDictionary()
)


class QuietSelector(selectors.DefaultSelector):
    quiet = False

    def select(self, timeout: float | None = None) -> list[tuple[Any, int]]:
        events: list[tuple[Any, int]] = super().select(timeout)
        if timeout is None or timeout > 0:
            self.quiet = True  # the loop had nothing to do and waited: what woke it is all
        elif events:
            self.quiet = False  # more arrived while the loop was busy
        return events


def new_event_loop() -> asyncio.AbstractEventLoop:
    selector = QuietSelector()
    loop = asyncio.SelectorEventLoop(selector)
    _selectors[loop] = selector
    return loop


def claim_quiet() -> bool:
    """Whether the running loop (one of `new_event_loop`'s) has had nothing new since it woke,
    and if so, make it not quiet until it next waits: what woke it may have been several calls
    at once, and only the first may count itself alone. False on any other loop."""
    selector = _selectors.get(asyncio.get_running_loop())
    if selector is None or not selector.quiet:
        return False
    selector.quiet = False
    return True
