"""Draw docs/architecture.png: the server's parts, what each may import, and one request's path.

    .venv/bin/python scripts/draw_architecture.py [--out docs/architecture.png]

Boxes are the parts (top imports bottom, never the reverse); the numbered arrows are one V2
`ModelInfer` call, bytes in to bytes out. Pillow only, with its built-in font, so it draws the
same anywhere.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

ROOT = Path(__file__).resolve().parents[1]
WIDTH, HEIGHT = 1180, 740
INK, MUTED, ACCENT = (33, 37, 41), (108, 117, 125), (13, 110, 253)


@dataclass(frozen=True)
class Part:
    title: str
    lines: tuple[str, ...]
    box: tuple[int, int, int, int]
    fill: tuple[int, int, int]


PARTS = [
    Part(
        "client/  digits_client  (its own distribution)",
        (
            "client.py: DigitsClient, AsyncDigitsClient",
            "cli.py: the digits command",
            "no onnxruntime, nothing of the server",
        ),
        (30, 30, 400, 150),
        (232, 244, 253),
    ),
    Part(
        "service/app.py  (composition root)",
        ("settings, workers, metrics", "builds every part below", "start, drain, stop"),
        (440, 30, 900, 150),
        (241, 243, 245),
    ),
    Part(
        "service/transport/  (speaks gRPC)",
        (
            "v2.py, digits.py: protobuf <-> arrays",
            "interceptor.py: errors -> codes, request metrics",
            "auth.py, tls.py, closing.py, common.py",
        ),
        (440, 190, 900, 330),
        (255, 243, 205),
    ),
    Part(
        "service/domain/  (no grpc, protobuf, onnxruntime)",
        (
            "preprocess.py: PNG/JPEG -> 28x28 as MNIST was made",
            "engine.py: admit, run, decide the label",
            "batching.py, inline.py: batches, on loop or thread",
        ),
        (440, 370, 900, 510),
        (209, 231, 221),
    ),
    Part(
        "service/store/",
        (
            "manifest.py: the typed manifest (training writes it)",
            "registry.py: versions on disk, checked against it",
            "runtime.py: onnxruntime (only here)",
        ),
        (440, 550, 900, 660),
        (226, 217, 243),
    ),
    Part(
        "leaves: names.py, errors.py, loop.py",
        ("shared by every part", "import nothing of ours"),
        (30, 550, 400, 660),
        (248, 249, 250),
    ),
]

# (start, end, what travels): the request down the left, the answer up the right.
STEPS = [
    ((400, 100), (440, 230), "bytes in: a ModelInferRequest"),
    ((560, 330), (560, 370), "engine.admit, then its tensor as rows [n,1,28,28]"),
    ((560, 510), (560, 550), "a batch of everyone's rows -> session.run"),
    ((780, 550), (780, 510), "the outputs; each caller gets its own rows"),
    ((780, 370), (780, 330), "arrays -> raw_output_contents"),
    ((440, 310), (300, 150), "bytes out: a ModelInferResponse"),
]
LEGEND = (930, 200)


def arrow(draw: ImageDraw.ImageDraw, start: tuple[int, int], end: tuple[int, int]) -> None:
    draw.line([start, end], fill=ACCENT, width=3)
    (x0, y0), (x1, y1) = start, end
    length = max(((x1 - x0) ** 2 + (y1 - y0) ** 2) ** 0.5, 1.0)
    ux, uy = (x1 - x0) / length, (y1 - y0) / length
    left = (x1 - 12 * ux + 6 * uy, y1 - 12 * uy - 6 * ux)
    right = (x1 - 12 * ux - 6 * uy, y1 - 12 * uy + 6 * ux)
    draw.polygon([end, left, right], fill=ACCENT)


def draw(out: Path) -> None:
    image = Image.new("RGB", (WIDTH, HEIGHT), "white")
    pen = ImageDraw.Draw(image)
    title = ImageFont.load_default(17)
    body = ImageFont.load_default(14)
    for part in PARTS:
        x0, y0 = part.box[:2]
        pen.rounded_rectangle(part.box, radius=10, fill=part.fill, outline=MUTED, width=2)
        pen.text((x0 + 14, y0 + 12), part.title, fill=INK, font=title)
        for i, line in enumerate(part.lines):
            pen.text((x0 + 18, y0 + 44 + 22 * i), line, fill=INK, font=body)
    x, y = LEGEND
    pen.text((x, y), "one V2 ModelInfer call", fill=ACCENT, font=title)
    for number, (start, end, label) in enumerate(STEPS, 1):
        arrow(pen, start, end)
        mid = ((start[0] + end[0]) // 2 + 8, (start[1] + end[1]) // 2 - 9)
        pen.text(mid, str(number), fill=ACCENT, font=title)
        words, line, lines = label.split(), "", []
        for word in words:  # wrap to the legend's width
            if pen.textlength(f"{line} {word}", font=body) > 220 and line:
                lines.append(line)
                line = word
            else:
                line = f"{line} {word}".strip()
        lines.append(line)
        y += 34
        pen.text((x, y), f"{number}", fill=ACCENT, font=title)
        for i, text in enumerate(lines):
            pen.text((x + 22, y + 2 + 18 * i), text, fill=INK, font=body)
        y += 18 * (len(lines) - 1)
    pen.text(
        (30, 700),
        "Each box imports only the boxes below it; tests/unit/test_layering.py holds the rules.",
        fill=MUTED,
        font=body,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    image.save(out, optimize=True)
    print(f"wrote {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "architecture.png")
    draw(parser.parse_args().out)


if __name__ == "__main__":
    main()
