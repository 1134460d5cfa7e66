"""One PNG of what a model does with one image: the input, every layer's activations, the answer.

Pillow only: the service must not depend on matplotlib. Panels are laid out left to right in the
order the layers run, wrapping into rows, so a reader follows the image through the network.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFont, ImageOps

from digits_client.messages import Classification, FloatArray, ModelSummary

RGB = tuple[int, int, int]
Font = ImageFont.FreeTypeFont | ImageFont.ImageFont

BG: RGB = (15, 17, 26)
PANEL: RGB = (28, 31, 45)
TEXT: RGB = (236, 238, 244)
MUTED: RGB = (146, 153, 173)
BAR: RGB = (86, 94, 124)
ACCENT: RGB = (252, 190, 50)
GOOD: RGB = (96, 204, 132)
BAD: RGB = (242, 90, 84)
MAX_WIDTH = 1400  # panels wrap into a new row past this
MARGIN, GAP, PAD = 24, 30, 12
TILE = 48  # a feature map's side on screen, near enough: maps scale by whole numbers
INPUT_SIDE = 112

# An inferno-like ramp: black for "did not fire", through purple and orange to pale yellow. Dark
# for zero matches how activations are usually shown (and the talk's printouts).
_ANCHORS = np.array(
    [(0, 0, 4), (31, 12, 72), (85, 15, 109), (136, 34, 106), (186, 54, 85),
     (227, 89, 51), (249, 140, 10), (249, 201, 50), (252, 255, 164)],
    dtype=np.float64,
)  # fmt: skip
RAMP = np.stack(
    [np.interp(np.linspace(0, 1, 256), np.linspace(0, 1, len(_ANCHORS)), _ANCHORS[:, c])
     for c in range(3)],
    axis=1,
).round().astype(np.uint8)  # fmt: skip


def percent(p: float) -> str:
    """0.99996 → ">99.9%", not a "100.0%" that no softmax reaches."""
    return ">99.9%" if p > 0.999 else f"{p:.1%}"


@functools.cache
def font(size: int) -> Font:
    return ImageFont.load_default(size=size)


def text_width(text: str, size: int) -> int:
    return math.ceil(font(size).getlength(text))


def layer_range(values: FloatArray) -> tuple[float, float]:
    """One scale per layer, not per map: a map that barely fires stays dark and the maps of a layer
    compare; the top is the 99.5th percentile so one hot pixel does not dim all the rest."""
    lo = min(0.0, float(values.min()))
    hi = float(np.percentile(values, 99.5))
    return lo, max(hi, lo + 1e-6)


def colour(values: FloatArray, lo: float, hi: float) -> npt.NDArray[np.uint8]:
    """Values → RGB through the ramp; the result has one more axis, of 3."""
    index = np.clip((values - lo) / (hi - lo), 0.0, 1.0) * 255
    out: npt.NDArray[np.uint8] = RAMP[index.round().astype(np.intp)]
    return out


def grid_shape(count: int, aspect: float) -> tuple[int, int]:
    """(columns, rows) for `count` cells, about `aspect` times wider than tall, full rows if can."""
    want = math.sqrt(count * aspect)
    divisors = [d for d in range(1, count + 1) if count % d == 0]
    columns = min(divisors, key=lambda d: (abs(math.log(d / want)), -d))
    if not 1 / 1.6 < columns / want < 1.6:
        columns = math.ceil(want)
    return columns, math.ceil(count / columns)


def tile_grid(cells: npt.NDArray[np.uint8], columns: int, gap: int) -> Image.Image:
    """[count, h, w, 3] tiles → one image of `columns` per row with `gap` pixels between."""
    count, h, w, _ = cells.shape
    rows = math.ceil(count / columns)
    grid = np.empty((rows * (h + gap) - gap, columns * (w + gap) - gap, 3), dtype=np.uint8)
    grid[:] = PANEL
    for i in range(count):
        top, left = (i // columns) * (h + gap), (i % columns) * (w + gap)
        grid[top : top + h, left : left + w] = cells[i]
    return Image.fromarray(grid)


def feature_maps(values: FloatArray) -> Image.Image:
    """[C,H,W] conv activations → C tiles, each upscaled by a whole number (nearest)."""
    lo, hi = layer_range(values)
    scale = max(1, round(TILE / values.shape[2]))
    tiles = colour(values, lo, hi).repeat(scale, axis=1).repeat(scale, axis=2)
    columns, _ = grid_shape(len(values), aspect=2.5)
    return tile_grid(tiles, columns, gap=4)


def units(values: FloatArray) -> Image.Image:
    """[N] dense activations → a near-square grid of cells; big cells also print their value."""
    lo, hi = layer_range(values)
    columns, _ = grid_shape(len(values), aspect=1.25)
    side = int(np.clip(260 // columns, 8, 40))
    cells = np.broadcast_to(colour(values, lo, hi)[:, None, None, :], (len(values), side, side, 3))
    image = tile_grid(np.ascontiguousarray(cells), columns, gap=2 if side > 12 else 1)
    if side >= 32:
        draw = ImageDraw.Draw(image)
        for i, value in enumerate(values):
            x, y = (i % columns) * (side + 2) + side // 2, (i // columns) * (side + 2) + side // 2
            ink = BG if (value - lo) / (hi - lo) > 0.6 else TEXT
            draw.text((x, y), f"{value:.2f}".lstrip("0"), fill=ink, font=font(11), anchor="mm")
    return image


def panel(title: str, subtitle: str, body: Image.Image) -> Image.Image:
    header = PAD + 20 + 18
    width = max(body.width, text_width(title, 16), text_width(subtitle, 12)) + 2 * PAD
    image = Image.new("RGB", (width, header + body.height + PAD), BG)
    draw = ImageDraw.Draw(image)
    draw.rounded_rectangle((0, 0, width - 1, image.height - 1), radius=10, fill=PANEL)
    draw.text((PAD, PAD), title, fill=TEXT, font=font(16))
    draw.text((PAD, PAD + 21), subtitle, fill=MUTED, font=font(12))
    image.paste(body, ((width - body.width) // 2, header))
    return image


def layer_panel(name: str, values: FloatArray) -> Image.Image:
    lo, hi = layer_range(values)
    scale = f"scale {lo:.3g} to {hi:.3g}"
    if values.ndim == 2:
        values = values[None]
    if values.ndim == 3:
        c, h, w = values.shape
        return panel(name, f"{c} maps of {h}x{w} · {scale}", feature_maps(values))
    flat = values.reshape(-1)
    return panel(name, f"{flat.size} units · {scale}", units(flat))


def input_panel(original: Image.Image | None, prepared: FloatArray | None) -> Image.Image:
    pictures: list[tuple[Image.Image, str]] = []
    if original is not None:
        thumb = ImageOps.contain(original.convert("RGB"), (INPUT_SIDE, INPUT_SIDE))
        pictures.append((thumb, "your image"))
    if prepared is not None:
        grey = Image.fromarray((np.clip(prepared, 0, 1) * 255).round().astype(np.uint8))
        pictures.append((grey.resize((INPUT_SIDE, INPUT_SIDE), Image.Resampling.NEAREST), "28x28"))
    body = Image.new("RGB", (len(pictures) * (INPUT_SIDE + 12) - 12, INPUT_SIDE + 18), PANEL)
    draw = ImageDraw.Draw(body)
    for i, (picture, caption) in enumerate(pictures):
        x = i * (INPUT_SIDE + 12)
        body.paste(picture, (x + (INPUT_SIDE - picture.width) // 2, 0))
        draw.text((x + INPUT_SIDE // 2, INPUT_SIDE + 4), caption, fill=MUTED, font=font(12),
                  anchor="mt")  # fmt: skip
    note = "28x28: as the server prepares it" if prepared is not None else "as sent"
    return panel("input", note, body)


def output_panel(result: Classification) -> Image.Image:
    bar_w, step, height = 26, 36, 130
    body = Image.new("RGB", (10 * step - (step - bar_w), height + 22 + 44), PANEL)
    draw = ImageDraw.Draw(body)
    for digit, p in enumerate(result.probabilities.tolist()):
        x, top = digit * step, height - round(p * (height - 18))
        chosen = digit == result.digit
        draw.rectangle((x, top, x + bar_w - 1, height), fill=ACCENT if chosen else BAR)
        if p >= 0.01:
            label = percent(p) if chosen else f"{p:.0%}"
            draw.text((x + bar_w // 2, top - 3), label, fill=TEXT, font=font(11), anchor="mb")
        draw.text((x + bar_w // 2, height + 4), str(digit), fill=ACCENT if chosen else TEXT,
                  font=font(16), anchor="mt")  # fmt: skip
    draw.line((0, height, body.width, height), fill=MUTED)
    if result.not_digit is not None and result.threshold is not None:
        y, w = height + 30, body.width
        ink = GOOD if result.is_digit else BAD
        draw.rounded_rectangle((0, y, w - 1, y + 9), radius=4, fill=BAR)
        draw.rounded_rectangle((0, y, max(9, round(result.not_digit * w)), y + 9), radius=4,
                               fill=ink)  # fmt: skip
        tx = round(result.threshold * w)
        draw.line((tx, y - 3, tx, y + 12), fill=TEXT, width=2)
        words = f"not-a-digit score {result.not_digit:.3f}, threshold {result.threshold:.2f}"
        draw.text((0, y + 16), words, fill=MUTED, font=font(12))
    return panel("output", "probability of each digit", body)


def title_block(result: Classification, model: ModelSummary, source: str) -> Image.Image:
    headline = (
        f"{model.name} v{model.version} reads {result.digit}, {percent(result.confidence)} sure"
    )
    lines: list[tuple[str, int, RGB]] = [(headline, 26, TEXT)]
    if result.is_digit is not None:
        verdict = "looks like a handwritten digit" if result.is_digit else "NOT A DIGIT"
        lines.append((verdict, 18, GOOD if result.is_digit else BAD))
    if result.top2_margin < 0.2:
        lines.append((f"unsure: {result.digit} or {result.runner_up}?", 18, ACCENT))
    about = f"{source} · {model.architecture}" if source else model.architecture
    lines.append((about, 13, MUTED))
    legend = "dark: did not fire, bright: fired strongly (each layer on its own scale)"
    width = max(*(text_width(text, size) for text, size, _ in lines), 250 + text_width(legend, 13))
    image = Image.new("RGB", (width, sum(size + 8 for _, size, _ in lines) + 20), BG)
    draw = ImageDraw.Draw(image)
    y = 0
    for text, size, ink in lines:
        draw.text((0, y), text, fill=ink, font=font(size))
        y += size + 8
    ramp = Image.fromarray(np.broadcast_to(RAMP[None], (12, 256, 3)).copy())
    image.paste(ramp.resize((240, 12)), (0, y + 4))
    draw.text((250, y + 10), legend, fill=MUTED, font=font(13), anchor="lm")
    return image


def notes(result: Classification) -> Image.Image:
    """A few lines on how to read the picture, for the layers it shows."""
    maps = any(a.ndim >= 2 for a in result.layers.values())
    lines = ["How to read it"]
    if maps:
        lines += ["Each tile: where one learned 5x5 filter fired on this image.",
                  "Early layers find strokes and edges, later ones larger parts."]  # fmt: skip
    lines += ["Each cell of a dense layer is one unit: how strongly it fired.",
              "Output: the last layer's ten scores turned into probabilities."]  # fmt: skip
    if result.not_digit is not None:
        lines.append("Bottom bar: past the white mark, it is judged not a digit.")
    image = Image.new("RGB", (max(text_width(line, 13) for line in lines), 19 * len(lines)), BG)
    draw = ImageDraw.Draw(image)
    for i, line in enumerate(lines):
        draw.text((0, i * 19), line, fill=TEXT if i == 0 else MUTED, font=font(13))
    return image


def render_layers(
    result: Classification,
    model: ModelSummary,
    *,
    original: Image.Image | None = None,
    prepared: FloatArray | None = None,
    source: str = "",
) -> Image.Image:
    """Title, then input → each layer in `result.layers` → output, as one RGB image."""
    panels = (
        [input_panel(original, prepared)] if original is not None or prepared is not None else []
    )
    panels += [layer_panel(name, values) for name, values in result.layers.items()]
    panels.append(output_panel(result))
    rows = flow(panels, MAX_WIDTH)
    title, guide = title_block(result, model, source), notes(result)
    widths = [sum(p.width for p in row) + GAP * (len(row) - 1) for row in rows]
    heights = [max(p.height for p in row) for row in rows]
    width = max(*widths, title.width + 2 * GAP + guide.width) + 2 * MARGIN
    top = max(title.height, guide.height)
    height = MARGIN + top + GAP // 2 + sum(heights) + GAP * (len(rows) - 1) + MARGIN
    canvas = Image.new("RGB", (width, height), BG)
    canvas.paste(title, (MARGIN, MARGIN))
    canvas.paste(guide, (width - MARGIN - guide.width, MARGIN + 4))
    draw = ImageDraw.Draw(canvas)
    y = MARGIN + top + GAP // 2
    for row, row_height in zip(rows, heights, strict=True):
        x = MARGIN
        for i, image in enumerate(row):
            canvas.paste(image, (x, y))
            x += image.width
            if i < len(row) - 1:  # an arrow into the next panel
                mid = y + min(image.height, row[i + 1].height) // 2
                draw.polygon([(x + 9, mid - 7), (x + 21, mid), (x + 9, mid + 7)], fill=MUTED)
            x += GAP
        y += row_height + GAP
    return canvas


def flow(panels: Sequence[Image.Image], max_width: int) -> list[list[Image.Image]]:
    rows: list[list[Image.Image]] = [[]]
    used = 0
    for image in panels:
        if rows[-1] and used + GAP + image.width > max_width:
            rows.append([])
            used = 0
        used += (GAP if rows[-1] else 0) + image.width
        rows[-1].append(image)
    return rows
