"""`python -m service`: parse settings (flags and DIGITS_* variables), serve until a signal."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from pydantic import ValidationError

from service.app import App
from service.settings import Settings

log = logging.getLogger("service")


async def serve(settings: Settings) -> None:
    """Serve until SIGTERM/SIGINT, then drain. Signals are caught from the start, so a signal
    that arrives while the models load stops the server at once instead of being ignored."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on_signal(sig: signal.Signals) -> None:
        log.info("%s received", sig.name)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    starting = asyncio.ensure_future(App.start(settings))
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if not starting.done():
        starting.cancel()
        log.info("stopped before serving")
        return
    stopping.cancel()
    app = starting.result()
    await stop.wait()
    await app.stop()


def main() -> int:
    try:
        settings = Settings(_cli_parse_args=True)  # type: ignore[call-arg]
    except ValidationError as exc:
        for error in exc.errors():
            where = ".".join(str(part) for part in error["loc"]) or "settings"
            print(f"python -m service: {where}: {error['msg']}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        asyncio.run(serve(settings))
    except RuntimeError as exc:
        log.error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
