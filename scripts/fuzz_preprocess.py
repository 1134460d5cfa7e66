"""Coverage-guided fuzzing of `service.domain.preprocess.decode_image` with atheris; by hand only.

    .venv/bin/pip install atheris
    .venv/bin/python scripts/fuzz_preprocess.py -max_total_time=60 -max_len=8192

Starts from a PNG and a JPEG of a drawn digit (written to a temporary corpus unless a corpus
folder is given as the last argument). Any exception other than InvalidInput is a bug: the server
would answer INTERNAL. So is a result that is not float32 [28,28] within [0,1].
"""

from __future__ import annotations

import io
import sys
import tempfile
from pathlib import Path

import atheris  # type: ignore[import-untyped,import-not-found,unused-ignore]
import numpy as np

# Pillow's Python side (the PNG chunk reader, the JPEG marker parser) is coverage too.
with atheris.instrument_imports():
    from PIL import Image, ImageDraw, JpegImagePlugin, PngImagePlugin  # noqa: F401

    from service.domain.preprocess import ImageLimits, decode_image
    from service.errors import InvalidInput

LIMITS = ImageLimits()


def seeds() -> list[bytes]:
    image = Image.new("L", (64, 64), 255)
    ImageDraw.Draw(image).line([(16, 12), (48, 12), (28, 54)], fill=0, width=6)
    encoded = []
    for fmt in ("PNG", "JPEG"):
        out = io.BytesIO()
        image.save(out, format=fmt)
        encoded.append(out.getvalue())
    return encoded


def test_one_input(data: bytes) -> None:
    try:
        pixels = decode_image(data, index=0, limits=LIMITS)
    except InvalidInput:
        return
    if pixels.shape != (28, 28) or pixels.dtype != np.float32:
        raise AssertionError(f"got {pixels.dtype} {pixels.shape}")
    if not (np.isfinite(pixels).all() and pixels.min() >= 0.0 and pixels.max() <= 1.0):
        raise AssertionError(f"pixels outside [0,1]: {pixels.min()}..{pixels.max()}")


def main() -> None:
    argv = list(sys.argv)
    if len(argv) < 2 or argv[-1].startswith("-"):
        corpus = Path(tempfile.mkdtemp(prefix="fuzz-preprocess-"))
        for i, seed in enumerate(seeds()):
            (corpus / f"seed{i}").write_bytes(seed)
        argv.append(str(corpus))
    atheris.Setup(argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
