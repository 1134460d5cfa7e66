"""`python -m service`: parse settings (flags and DIGITS_* variables), serve until a signal."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from pydantic import ValidationError

from service.app import App
from service.loop import new_event_loop
from service.settings import Settings
from service.store.manifest import ManifestError
from service.workers import WorkerRole, supervise

log = logging.getLogger("service")


async def serve(settings: Settings, role: WorkerRole | None = None) -> None:
    """Serve until SIGTERM/SIGINT, then drain. Signals are caught from the start, so a signal
    that arrives while the models load stops the server at once instead of being ignored."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on_signal(sig: signal.Signals) -> None:
        log.info("%s received", sig.name)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    starting = asyncio.ensure_future(App.start(settings, role))
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
    role = WorkerRole.from_environment()
    worker = f" worker-{role.index}" if role else ""
    logging.basicConfig(
        level=settings.log_level,
        format=f"%(asctime)s %(levelname)s{worker} %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if settings.workers > 1 and role is None:
        return asyncio.run(supervise(settings, sys.argv[1:]))
    try:
        with asyncio.Runner(loop_factory=new_event_loop) as runner:
            runner.run(serve(settings, role))
    except (RuntimeError, ManifestError) as exc:
        log.error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
