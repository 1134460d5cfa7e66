"""The report's PNG, drawn with Pillow (a service dependency; matplotlib is only for training).

Left: images/s against concurrency, closed loop, one line per model and API. Right: latency
p50 and p99 against images/s, the closed-loop sweep as lines and the open loop as diamonds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

WIDTH, HEIGHT = 1400, 660
PANEL_TOP, PANEL_BOTTOM = 80, 540
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")
GRID, AXIS, TEXT = "#e4e4e4", "#333333", "#111111"
Font = ImageFont.FreeTypeFont | ImageFont.ImageFont


def font(size: int) -> Font:
    return ImageFont.load_default(size=size)


def linear_ticks(hi: float, count: int = 5) -> list[float]:
    """0 and round steps (1, 2, 5 x 10^k) up to at least `hi`."""
    raw = max(hi, 1e-9) / count
    step = min(
        (m * 10 ** math.floor(math.log10(raw)) for m in (1, 2, 5, 10)),
        key=lambda s: abs(s - raw) if s >= raw else math.inf,
    )
    return [i * step for i in range(math.ceil(hi / step) + 1)]


def power2_ticks(lo: float, hi: float) -> list[float]:
    """1, 2, 4, 8, ... from `lo` to `hi`, at least two of them."""
    first = math.floor(math.log2(lo))
    last = max(math.ceil(math.log2(hi)), first + 1)
    return [2.0**k for k in range(first, last + 1)]


def log_ticks(lo: float, hi: float) -> list[float]:
    """1, 2, 5 x 10^k from below `lo` to above `hi`."""
    lo, hi = lo * 0.9, hi * 1.1
    ticks: list[float] = []
    for k in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1):
        ticks += [m * 10.0**k for m in (1, 2, 5)]
    below = max((t for t in ticks if t <= lo), default=ticks[0])
    above = min((t for t in ticks if t >= hi), default=ticks[-1])
    return [t for t in ticks if below <= t <= above]


def label(value: float) -> str:
    return f"{value:g}" if value < 10_000 else f"{value / 1000:g}k"


@dataclass
class Panel:
    draw: ImageDraw.ImageDraw
    left: int
    right: int
    xs: list[float]  # ticks; the first and last are the axis ends
    ys: list[float]
    x_log: bool
    y_log: bool

    def _pos(self, value: float, ticks: list[float], log: bool) -> float:
        lo, hi = ticks[0], ticks[-1]
        if log:
            value, lo, hi = math.log(max(value, 1e-12)), math.log(lo), math.log(hi)
        return (value - lo) / (hi - lo) if hi > lo else 0.5

    def xy(self, x: float, y: float) -> tuple[float, float]:
        fx, fy = self._pos(x, self.xs, self.x_log), self._pos(y, self.ys, self.y_log)
        return (
            self.left + fx * (self.right - self.left),
            PANEL_BOTTOM - fy * (PANEL_BOTTOM - PANEL_TOP),
        )

    def axes(self, title: str, x_name: str, y_name: str) -> None:
        d, small = self.draw, font(14)
        for x in self.xs:
            px, _ = self.xy(x, self.ys[0])
            d.line([(px, PANEL_TOP), (px, PANEL_BOTTOM)], fill=GRID)
            d.line([(px, PANEL_BOTTOM), (px, PANEL_BOTTOM + 5)], fill=AXIS)
            d.text((px, PANEL_BOTTOM + 8), label(x), fill=TEXT, font=small, anchor="mt")
        for y in self.ys:
            _, py = self.xy(self.xs[0], y)
            d.line([(self.left, py), (self.right, py)], fill=GRID)
            d.line([(self.left - 5, py), (self.left, py)], fill=AXIS)
            d.text((self.left - 8, py), label(y), fill=TEXT, font=small, anchor="rm")
        d.rectangle([(self.left, PANEL_TOP), (self.right, PANEL_BOTTOM)], outline=AXIS)
        middle = (self.left + self.right) / 2
        d.text((middle, PANEL_TOP - 14), title, fill=TEXT, font=font(18), anchor="md")
        d.text((middle, PANEL_BOTTOM + 32), x_name, fill=TEXT, font=font(15), anchor="mt")
        vertical_text(d, (self.left - 62, (PANEL_TOP + PANEL_BOTTOM) / 2), y_name, font(15))

    def line(self, points: list[tuple[float, float]], color: str, width: int) -> None:
        if len(points) > 1:
            self.draw.line([self.xy(x, y) for x, y in points], fill=color, width=width)

    def marker(self, x: float, y: float, color: str, shape: str, r: int = 5) -> None:
        marker(self.draw, self.xy(x, y), color, shape, r)


def vertical_text(
    draw: ImageDraw.ImageDraw, centre: tuple[float, float], text: str, face: Font
) -> None:
    """Text turned 90 degrees, read bottom to top, centred on `centre`."""
    left, top, right, bottom = draw.textbbox((0, 0), text, font=face)
    box = Image.new("L", (int(right - left) + 4, int(bottom - top) + 4), 0)
    ImageDraw.Draw(box).text((2 - left, 2 - top), text, fill=255, font=face)
    turned = box.rotate(90, expand=True)
    x, y = int(centre[0] - turned.width / 2), int(centre[1] - turned.height / 2)
    draw.bitmap((x, y), turned, fill=TEXT)


def marker(
    draw: ImageDraw.ImageDraw, at: tuple[float, float], color: str, shape: str, r: int = 5
) -> None:
    px, py = at
    diamond = [(px, py - r - 2), (px + r + 2, py), (px, py + r + 2), (px - r - 2, py)]
    if shape == "circle":
        draw.ellipse([(px - r, py - r), (px + r, py + r)], fill=color)
    elif shape == "square":
        draw.rectangle([(px - r, py - r), (px + r, py + r)], fill="white", outline=color, width=2)
    elif shape == "diamond":
        draw.polygon(diamond, fill=color)
    else:  # hollow diamond
        draw.polygon(diamond, fill="white", outline=color, width=2)


def draw_report(report: dict[str, Any], path: Path) -> None:
    phases = [p for p in report["phases"] if p["ok"] and p["latency_ms"]["p50"] is not None]
    series = sorted({(p["model"], p["api"]) for p in phases})
    colors = {key: COLORS[i % len(COLORS)] for i, key in enumerate(series)}
    image = Image.new("RGB", (WIDTH, HEIGHT), "white")
    draw = ImageDraw.Draw(image)
    settings = report["settings"]
    when = report["started"][:16].replace("T", " ")
    title = (
        f"digits-serving load test, {when}: {settings['batch_size']} image(s) per "
        f"request, {settings['duration_s']:g} s per phase, {report['machine']['cpus']} CPUs"
    )
    draw.text((WIDTH / 2, 18), title, fill=TEXT, font=font(20), anchor="mt")
    if not phases:
        draw.text((WIDTH / 2, HEIGHT / 2), "no successful phase", fill=TEXT, font=font(20))
        image.save(path)
        return

    closed = [p for p in phases if p["mode"] == "closed"]
    concurrency = sorted({p["concurrency"] for p in closed}) or [1]
    throughput = [p["images_per_s"] for p in phases]
    left = Panel(
        draw,
        100,
        640,
        power2_ticks(concurrency[0], concurrency[-1]),
        linear_ticks(max(throughput) * 1.05),
        x_log=True,
        y_log=False,
    )
    left.axes("Throughput vs concurrency (closed loop)", "concurrent requests", "images/s")
    latencies = [p["latency_ms"][k] for p in phases for k in ("p50", "p99")]
    right = Panel(
        draw,
        820,
        1360,
        linear_ticks(max(throughput) * 1.05),
        log_ticks(min(latencies), max(latencies)),
        x_log=False,
        y_log=True,
    )
    right.axes("Latency vs throughput", "images/s", "latency ms")

    for key in series:
        color = colors[key]
        sweep = sorted((p for p in closed if (p["model"], p["api"]) == key), key=_conc)
        left.line([(p["concurrency"], p["images_per_s"]) for p in sweep], color, 3)
        for p in sweep:
            left.marker(p["concurrency"], p["images_per_s"], color, "circle")
        # In order of concurrency: where more load buys no throughput, the line turns back.
        for pct, width, shape in (("p50", 3, "circle"), ("p99", 1, "square")):
            right.line([(p["images_per_s"], p["latency_ms"][pct]) for p in sweep], color, width)
            for p in sweep:
                right.marker(p["images_per_s"], p["latency_ms"][pct], color, shape)
        for p in sweep:
            px, py = right.xy(p["images_per_s"], p["latency_ms"]["p50"])
            draw.text((px + 8, py + 4), f"c={p['concurrency']}", fill=color, font=font(12))
        for p in phases:
            if p["mode"] == "open" and (p["model"], p["api"]) == key:
                x, lat = p["images_per_s"], p["latency_ms"]
                right.line([(x, lat["p50"]), (x, lat["p99"])], color, 1)
                right.marker(x, lat["p99"], color, "hollow")
                right.marker(x, lat["p50"], color, "diamond")
    legend(draw, series, colors)
    image.save(path)


def _conc(phase: dict[str, Any]) -> int:
    return int(phase["concurrency"])


def legend(
    draw: ImageDraw.ImageDraw, series: list[tuple[str, str]], colors: dict[tuple[str, str], str]
) -> None:
    entries: list[tuple[str, str, str]] = [
        (colors[key], "line", f"{key[0]} {key[1]}") for key in series
    ]
    entries += [
        (AXIS, "circle", "p50 closed loop"),
        (AXIS, "square", "p99 closed loop"),
        (AXIS, "diamond", "p50 open loop (Poisson)"),
        (AXIS, "hollow", "p99 open loop"),
    ]
    small, y, x = font(15), HEIGHT - 50, 100
    for color, shape, text in entries:
        if shape == "line":
            draw.line([(x, y), (x + 28, y)], fill=color, width=4)
        else:
            marker(draw, (x + 14, y), color, shape)
        draw.text((x + 36, y), text, fill=TEXT, font=small, anchor="lm")
        x += 36 + int(draw.textlength(text, font=small)) + 24
