"""`helm test`: classify the sample handwritten 7 through digits.v1; fail unless the answer is 7.

Runs in the release's own image (which has the service's client) with DIGITS_TARGET, the
model to ask in DIGITS_TEST_MODEL and the sample image at DIGITS_TEST_IMAGE.
"""

import os
import sys
from pathlib import Path

from service.client import DigitsClient, DigitsError

target = os.environ["DIGITS_TARGET"]
model = os.environ.get("DIGITS_TEST_MODEL", "convnet")
image = Path(os.environ["DIGITS_TEST_IMAGE"]).read_bytes()
try:
    with DigitsClient(target, timeout=30) as client:
        [result] = client.classify([image], model=model)
except DigitsError as error:
    sys.exit(f"{target}: {model}: {error.code}: {error.message}")
print(f"{target}: {model} reads the sample 7 as {result.digit} ({result.confidence:.1%} sure)")
sys.exit(0 if result.digit == 7 else 1)
