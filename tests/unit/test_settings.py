"""Settings: flags and DIGITS_* variables agree, and the README's table matches the code."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from service.settings import Settings

README = Path(__file__).resolve().parents[2] / "README.md"


def test_flags_and_environment_set_the_same_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIGITS_MAX_BATCH_SIZE", "16")
    monkeypatch.setattr("sys.argv", ["service", "--grpc-port", "0", "--models", '["mlp"]'])
    settings = Settings(_cli_parse_args=True)  # type: ignore[call-arg]
    assert (settings.max_batch_size, settings.grpc_port, settings.models) == (16, 0, ["mlp"])


def test_a_queue_smaller_than_one_request_is_refused() -> None:
    with pytest.raises(ValidationError, match="max_queue_size"):
        Settings(max_queue_size=10, max_images_per_request=100)


def test_readme_settings_table_matches_the_code() -> None:
    rows = re.findall(
        r"^\| `--([a-z-]+)` \| `(DIGITS_[A-Z_]+)` \| `([^`]*)` \| (.+) \|$",
        README.read_text(),
        flags=re.MULTILINE,
    )
    documented = {flag.replace("-", "_"): (env, default, text) for flag, env, default, text in rows}
    assert set(documented) == set(Settings.model_fields)
    for name, field in Settings.model_fields.items():
        env, default, text = documented[name]
        assert env == f"DIGITS_{name.upper()}"
        assert text == field.description
        if field.default_factory is None:
            assert default == str(field.default), name
