"""`helm test`: classify the sample handwritten 7 through digits.v1; fail unless the answer is 7.

Runs in the release's own image (which has the client distribution, digits-client) with
DIGITS_TARGET, the model to ask in DIGITS_TEST_MODEL, the sample image at DIGITS_TEST_IMAGE and,
when token auth is on, the server's token file at DIGITS_TOKEN_FILE (the first token is used).
"""

import os
import sys
from pathlib import Path

from digits_client.client import DigitsClient, DigitsError, Security

target = os.environ["DIGITS_TARGET"]
model = os.environ.get("DIGITS_TEST_MODEL", "convnet")
image = Path(os.environ["DIGITS_TEST_IMAGE"]).read_bytes()
token = None
if token_file := os.environ.get("DIGITS_TOKEN_FILE"):
    lines = Path(token_file).read_text().splitlines()
    token = next(t.strip() for t in lines if t.strip() and not t.strip().startswith("#"))
try:
    with DigitsClient(target, timeout=30, security=Security(token=token)) as client:
        [result] = client.classify([image], model=model)
except DigitsError as error:
    sys.exit(f"{target}: {model}: {error.code}: {error.message}")
print(f"{target}: {model} reads the sample 7 as {result.digit} ({result.confidence:.1%} sure)")
sys.exit(0 if result.digit == 7 else 1)
