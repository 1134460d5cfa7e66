"""The playground: `GET /` serves a page where a learner draws a digit and watches every layer.

Three static files shipped in the package (`static/`), no build step, nothing fetched from
elsewhere: the page calls this server's own `POST /v1/classify` (with `layers=input,...` and
`layer_data=base64`) and `GET /v2/models/...` routes. On with `--playground`; the routes do not
exist otherwise.
"""

from __future__ import annotations

from importlib import resources

from aiohttp import web

from service.transport.http.common import Route

FILES = {
    "playground.js": "text/javascript",
    "playground.css": "text/css",
}
# The page runs only its own files; images it draws come from canvases (data: and blob: URLs).
POLICY = (
    "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'"
)


def _read(name: str) -> bytes:
    return (resources.files(__package__) / "static" / name).read_bytes()


class Playground:
    def __init__(self) -> None:
        # Read once: they are small, and a page load then touches no disk.
        self._page = _read("index.html")
        self._files = {name: _read(name) for name in FILES}

    async def page(self, request: web.Request) -> web.Response:
        return self._answer(self._page, "text/html")

    async def file(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in self._files:
            raise web.HTTPNotFound()
        return self._answer(self._files[name], FILES[name])

    @staticmethod
    def _answer(body: bytes, kind: str) -> web.Response:
        response = web.Response(body=body, content_type=kind, charset="utf-8")
        response.headers["Content-Security-Policy"] = POLICY
        response.headers["Cache-Control"] = "no-cache"
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response


def routes() -> list[Route]:
    playground = Playground()
    return [
        Route("GET", "/", playground.page, "playground"),
        Route("GET", "/playground/{name}", playground.file, "playground_file"),
    ]
