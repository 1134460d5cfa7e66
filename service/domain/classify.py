"""The friendly API's request, whatever the wire (digits.v1 over gRPC, `/v1/classify` over HTTP):
images in, each one's digit, verdict and asked-for layers out, through the engine.

    classified = await classify(engine, Ask(model="mlp", layers=["*"]), count, encoded, decode)
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from service.domain.engine import Decisions, Engine
from service.errors import NotFound
from service.names import DEFAULT_MODEL, LAYER_PREFIX, LOGITS, FloatArray, Outputs
from service.store.registry import ModelVersion

INPUT_LAYER = "input"  # asked for by name only: the image as the server prepared it
# Below this many encoded bytes a request is decoded on the event loop; above, on a thread.
INLINE_DECODE_BYTES = 64 * 1024


def layer_names(model: ModelVersion, asked: list[str]) -> tuple[bool, list[str]]:
    """Short names ("conv1") or "*" → whether "input" was asked for, and the graph output
    names ("layer.conv1") in model order. "*" is every layer of the model, not "input"."""
    available = model.layers
    if "*" in asked:
        return INPUT_LAYER in asked, available
    names = []
    for i, name in enumerate(asked):
        if name == INPUT_LAYER:
            continue
        full = name if name.startswith(LAYER_PREFIX) else LAYER_PREFIX + name
        if full not in available:
            short = ", ".join([INPUT_LAYER, *(n.removeprefix(LAYER_PREFIX) for n in available)])
            raise NotFound(f"layers[{i}]: model '{model.name}' has no layer '{name}' ({short})")
        names.append(full)
    return INPUT_LAYER in asked, [n for n in available if n in names]


@dataclass(frozen=True)
class Ask:
    """What a classify request asks for, besides its images."""

    model: str = ""  # "" is DEFAULT_MODEL
    version: int | str | None = None  # None or 0 or "": the newest
    layers: list[str] = field(default_factory=list)
    include_logits: bool = False
    deadline: float | None = None  # time.monotonic() seconds


@dataclass(frozen=True)
class Classified:
    model: ModelVersion
    rows: FloatArray  # [n,1,28,28], the images as the model saw them
    outputs: Outputs  # probabilities, not_digit, logits if asked, the layers asked for
    decisions: Decisions
    with_input: bool  # "input" was asked for: answer `rows` as a layer
    layers: list[str]  # the graph's names of the layers asked for, in model order


async def classify(
    engine: Engine, ask: Ask, count: int, encoded_bytes: int, decode: Callable[[], FloatArray]
) -> Classified:
    """Admit `count` images (refused before any decoding), `decode()` them (on a thread when
    they are large), run them, decide each one's label."""
    model = engine.model(ask.model or DEFAULT_MODEL, ask.version)
    with_input, layers = layer_names(model, ask.layers)
    wanted = [LOGITS, *layers] if ask.include_logits else layers
    with engine.admit(
        model.name, model.version, count, wanted, rows_field="images", outputs_field="layers"
    ) as admitted:
        if encoded_bytes > INLINE_DECODE_BYTES:
            rows = await asyncio.to_thread(decode)
        else:
            rows = decode()
        outputs = await engine.run(admitted, rows, ask.deadline)
    return Classified(model, rows, outputs, engine.decide(model, outputs), with_input, layers)
