"""The chart's `helm test` script against a real server that asks for a bearer token."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.integration.server import ServerProcess

FILES = Path(__file__).resolve().parents[2] / "deploy" / "helm" / "digits-serving" / "files"


def test_helm_test_script_uses_the_token_file(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("# rotated monthly\nsecond-token-1\nthird-token-2\n")
    server = ServerProcess("--auth-tokens-file", str(tokens), "--models", '["convnet"]')
    try:
        env = {
            **os.environ,
            "DIGITS_TARGET": server.address,
            "DIGITS_TEST_MODEL": "convnet",
            "DIGITS_TEST_IMAGE": str(FILES / "seven.png"),
        }
        script = [sys.executable, str(FILES / "helm-test.py")]
        with_token = subprocess.run(
            script,
            env={**env, "DIGITS_TOKEN_FILE": str(tokens)},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert with_token.returncode == 0, with_token.stderr
        assert "reads the sample 7 as 7" in with_token.stdout
        without = subprocess.run(
            script, env=env, capture_output=True, text=True, timeout=60, check=False
        )
        assert without.returncode != 0
        assert "UNAUTHENTICATED" in without.stderr
    finally:
        server.stop()
