"""`digits`: classify image files, list models, check health and look inside a model from a shell.

    digits classify seven.png blob.jpg --model mlp
    digits models
    digits health
    digits inspect seven.png --out layers.png

Exit codes: 0 success, 1 a server or connection error (one line on stderr), 2 a usage error.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from PIL import Image

from digits_client.client import (
    DEFAULT_MODEL,
    DEFAULT_TARGET,
    Classification,
    DigitsClient,
    DigitsError,
    Security,
)
from digits_client.render import percent, render_layers

UNSURE_MARGIN = 0.2  # top-2 probabilities closer than this: say which two it hesitates between
BATCH = 32  # images per Classify call, well under any server cap


class UsageError(Exception):
    """Bad arguments the parser cannot see, such as a missing file: exit code 2."""


def read_images(paths: Sequence[str]) -> list[bytes]:
    images = []
    for name in paths:
        path = Path(name)
        if not path.is_file():
            raise UsageError(
                f"{name}: no such file" if not path.exists() else f"{name}: not a file"
            )
        try:
            images.append(path.read_bytes())
        except OSError as error:
            raise UsageError(f"{name}: cannot read ({error.strerror})") from None
    return images


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], right: set[int]) -> str:
    """Plain aligned columns; the columns in `right` (numbers) are right-aligned."""
    cells = [list(headers), *[[str(value) for value in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = []
    for row in cells:
        padded = [
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(padded).rstrip())
    return "\n".join(lines)


def verdict(result: Classification) -> str:
    if result.is_digit is None:
        return ""
    return "digit" if result.is_digit else "NOT A DIGIT"


def unsure(result: Classification) -> str:
    if result.top2_margin >= UNSURE_MARGIN:
        return ""
    return f"unsure ({result.digit} or {result.runner_up}?)"


def classify(args: argparse.Namespace, client: DigitsClient) -> int:
    images = read_images(args.images)
    results: list[Classification] = []
    for start in range(0, len(images), BATCH):
        batch = images[start : start + BATCH]
        results += client.classify(batch, model=args.model, version=args.version)
    if args.json:
        rows = [
            {
                "file": name,
                "digit": r.digit,
                "confidence": r.confidence,
                "top2_margin": r.top2_margin,
                "runner_up": r.runner_up,
                "unsure": r.top2_margin < UNSURE_MARGIN,
                "not_digit": r.not_digit,
                "is_digit": r.is_digit,
                "threshold": r.threshold,
                "probabilities": [round(float(p), 6) for p in r.probabilities],
            }
            for name, r in zip(args.images, results, strict=True)
        ]
        print(json.dumps({"model": args.model, "version": args.version, "results": rows}, indent=2))
        return 0
    rows_ = [
        [
            name,
            r.digit,
            percent(r.confidence),
            "" if r.not_digit is None else f"{r.not_digit:.3f}",
            verdict(r),
            unsure(r),
        ]
        for name, r in zip(args.images, results, strict=True)
    ]
    headers = ["file", "digit", "confidence", "not-a-digit", "verdict", ""]
    print(table(headers, rows_, right={1, 2, 3}))
    return 0


def models(args: argparse.Namespace, client: DigitsClient) -> int:
    summaries = client.models()
    if args.json:
        print(json.dumps([dataclasses.asdict(m) for m in summaries], indent=2))
        return 0
    rows_ = [
        [
            m.name,
            m.version,
            ",".join(map(str, m.versions)),
            f"{m.parameters:,}",
            f"{m.test_accuracy:.2%}",
            f"{m.not_digit_threshold:.3f}",
            m.device.removesuffix("ExecutionProvider") + ("" if m.ready else " (not ready)"),
            m.architecture,
        ]
        for m in summaries
    ]
    headers = [
        "name",
        "version",
        "versions",
        "parameters",
        "test accuracy",
        "not-digit threshold",
        "device",
        "architecture",
    ]
    print(table(headers, rows_, right={1, 3, 4, 5}))
    return 0


def health(args: argparse.Namespace, client: DigitsClient) -> int:
    status = client.health(args.service)
    print(status)
    return 0 if status == "SERVING" else 1


def inspect(args: argparse.Namespace, client: DigitsClient) -> int:
    [data] = read_images([args.image])
    summary = client.model(args.model, args.version)
    [result] = client.classify(
        [data], model=summary.name, version=summary.version, layers=["input", "*"]
    )
    # The server's 28x28 input, as it prepared the image for the model: drawn first, apart.
    prepared = result.layers.pop("input")[0]
    try:
        original: Image.Image | None = Image.open(io.BytesIO(data))
    except OSError:  # the server read it, Pillow here cannot: draw the rest
        original = None
    name = Path(args.image).name
    image = render_layers(result, summary, original=original, prepared=prepared, source=name)
    try:
        image.save(args.out, format="PNG")
    except OSError as error:
        raise UsageError(f"{args.out}: cannot write ({error.strerror or error})") from None
    size = f"{image.width}x{image.height}"
    said = (
        f"{summary.name} v{summary.version} reads {result.digit}, {percent(result.confidence)} sure"
    )
    print(f"wrote {args.out} ({size}): {said}, {verdict(result) or 'no verdict'}")
    return 0


Command = Callable[[argparse.Namespace, DigitsClient], int]


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="digits", description="Talk to a digits-serving server.")
    root.add_argument(
        "--target",
        default=os.environ.get("DIGITS_TARGET", DEFAULT_TARGET),
        help="server host:port (default: $DIGITS_TARGET or %(default)s)",
    )
    root.add_argument("--timeout", type=float, default=10.0, help="seconds per call (default 10)")
    env = os.environ.get
    root.add_argument(
        "--tls-ca",
        default=env("DIGITS_TLS_CA"),
        help="CA of the server's certificate: use TLS ($DIGITS_TLS_CA)",
    )
    root.add_argument(
        "--tls-cert",
        default=env("DIGITS_TLS_CLIENT_CERT"),
        help="client certificate for mutual TLS ($DIGITS_TLS_CLIENT_CERT)",
    )
    root.add_argument(
        "--tls-key",
        default=env("DIGITS_TLS_CLIENT_KEY"),
        help="client key for mutual TLS ($DIGITS_TLS_CLIENT_KEY)",
    )
    root.add_argument(
        "--token",
        default=env("DIGITS_TOKEN"),
        help="bearer token, when the server asks for one ($DIGITS_TOKEN)",
    )
    commands = root.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, run: Command, about: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=about, description=about)
        sub.set_defaults(run=run)
        return sub

    def model_options(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--model", default=DEFAULT_MODEL, help="model name (default %(default)s)")
        sub.add_argument("--version", type=int, default=0, help="model version (default: newest)")

    sub = command("classify", classify, "classify image files (PNG, JPEG, ...)")
    sub.add_argument("images", nargs="+", metavar="IMG")
    model_options(sub)
    sub.add_argument("--json", action="store_true", help="print JSON instead of a table")
    sub = command("models", models, "list the served models")
    sub.add_argument("--json", action="store_true", help="print JSON instead of a table")
    sub = command("health", health, "print the health status; exit 0 when SERVING")
    sub.add_argument(
        "service",
        nargs="?",
        default="",
        metavar="SERVICE",
        help="e.g. digits.v1.Digits (default: the whole server)",
    )
    sub = command("inspect", inspect, "draw every layer's activations for one image into a PNG")
    sub.add_argument("image", metavar="IMG")
    sub.add_argument("--out", default="layers.png", help="PNG to write (default %(default)s)")
    model_options(sub)
    return root


def main(argv: list[str] | None = None) -> int:
    try:
        args = parser().parse_args(argv)
    except SystemExit as exit_:  # argparse exits on --help (0) and on bad usage (2)
        return exit_.code if isinstance(exit_.code, int) else 2
    run: Command = args.run
    try:
        security = Security(args.tls_ca, args.tls_cert, args.tls_key, args.token)
        with DigitsClient(args.target, timeout=args.timeout, security=security) as client:
            return run(args, client)
    except (UsageError, OSError) as error:  # OSError: an unreadable certificate file
        print(f"digits {args.command}: error: {error}", file=sys.stderr)
        return 2
    except DigitsError as error:
        print(f"digits {args.command}: {error.code}: {error.message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
