"""Bearer tokens: where they come from, how the header is read, how they are compared."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from service.settings import Settings
from service.transport.auth import AuthInterceptor, _bearer


def test_tokens_come_from_the_variable_and_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("# rotated 2026-11\n\n  from-file  \n#disabled\nsecond#part\n")
    monkeypatch.setenv("DIGITS_AUTH_TOKENS", "a, b,,")
    settings = Settings(auth_tokens_file=tokens)
    assert settings.bearer_tokens() == ["a", "b", "from-file", "second#part"]
    assert "a, b" not in repr(settings)


def test_no_tokens_means_no_auth() -> None:
    assert Settings().bearer_tokens() == []


def test_auth_asked_for_without_a_token_is_an_error(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("# nothing yet\n\n")
    with pytest.raises(ValueError, match="no token"):
        Settings(auth_tokens_file=tokens).bearer_tokens()


@pytest.mark.parametrize(
    "fields",
    [{"tls_cert": "c.pem"}, {"tls_key": "k.pem"}, {"tls_client_ca": "ca.pem"}],
)
def test_tls_files_must_come_together(fields: dict[str, str]) -> None:
    with pytest.raises(ValidationError, match="tls_"):
        Settings(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["tls_cert", "tls_key", "auth_tokens_file"])
def test_a_missing_file_is_a_settings_error(tmp_path: Path, name: str) -> None:
    fields = {"tls_cert": tmp_path / "c.pem", "tls_key": tmp_path / "k.pem"}
    for path in fields.values():
        path.write_text("")
    fields[name] = tmp_path / "missing"
    with pytest.raises(ValidationError, match=f"{name}: no such file"):
        Settings(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("metadata", "token"),
    [
        ([("authorization", "Bearer s3cret")], b"s3cret"),
        ([("x-other", "1"), ("authorization", "bearer  s3cret ")], b"s3cret"),
        ([("authorization", "Basic czNjcmV0")], None),
        ([("authorization", "Bearer ")], None),
        ([], None),
        (None, None),
    ],
)
def test_the_bearer_token_is_read_from_the_authorization_header(
    metadata: list[tuple[str, str]] | None, token: bytes | None
) -> None:
    assert _bearer(metadata) == token


def test_only_a_whole_configured_token_is_accepted() -> None:
    auth = AuthInterceptor(["first-token", "second-token"])
    assert auth.accepts(b"first-token")
    assert auth.accepts(b"second-token")
    for wrong in (b"", b"first", b"first-token2", b"SECOND-TOKEN"):
        assert not auth.accepts(wrong)


def test_auth_without_tokens_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one token"):
        AuthInterceptor([])
