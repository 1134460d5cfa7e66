"""The names every layer of the server shares, in one place: array types, the model's input and
outputs as the store's graphs name them, and the default model. A leaf: imports nothing of ours."""

from __future__ import annotations

from typing import TypeAlias

import numpy as np
import numpy.typing as npt

FloatArray: TypeAlias = npt.NDArray[np.float32]
Outputs: TypeAlias = dict[str, FloatArray]  # output name → rows

INPUT_NAME = "image"  # the graph's one input: [n, 1, 28, 28] float32 in [0, 1]
INPUT_SHAPE = [-1, 1, 28, 28]
ROW_SHAPE = (1, 28, 28)

PROBABILITIES = "probabilities"
LOGITS = "logits"
NOT_DIGIT = "not_digit"
# Every graph has these; V2 lists them in metadata and returns them when a request names none.
REQUIRED_OUTPUTS = (PROBABILITIES, LOGITS, NOT_DIGIT)
LAYER_PREFIX = "layer."  # a hidden layer's activations: "layer.conv1", "layer.hidden1"

DEFAULT_MODEL = "convnet"  # digits.v1's model when a request names none
