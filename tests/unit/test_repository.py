"""The store's listing: version policies, their errors, and what a change to a version's files
looks like."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from service.store.manifest import ManifestError
from service.store.repository import Fingerprint, VersionPolicy, list_model, read_policy


def policy(**given: object) -> VersionPolicy:
    return VersionPolicy.model_validate(given)


@pytest.mark.parametrize(
    ("given", "chosen"),
    [
        ({}, [1, 2, 5]),
        ({"all": {}}, [1, 2, 5]),
        ({"latest": {"num_versions": 1}}, [5]),
        ({"latest": {"num_versions": 2}}, [2, 5]),
        ({"latest": {"num_versions": 9}}, [1, 2, 5]),
        ({"specific": {"versions": [1, 5, 7]}}, [1, 5]),
    ],
)
def test_policies_choose_as_triton_names_them(given: dict[str, object], chosen: list[int]) -> None:
    assert policy(**given).choose([5, 1, 2]) == chosen


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "config.json"),
        ('{"version_policy": {"latest": {}}}', "num_versions"),
        ('{"version_policy": {"latest": {"num_versions": 0}}}', "num_versions"),
        ('{"version_policy": {"all": {}, "latest": {"num_versions": 1}}}', "one of"),
        ('{"version_policy": {"newest": {}}}', "newest"),
        ('{"version_policy": {"specific": {"versions": []}}}', "versions"),
        ('{"platform": "onnx"}', "platform"),
    ],
)
def test_a_bad_config_is_refused_naming_the_field(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "config.json").write_text(text)
    with pytest.raises(ManifestError, match=message):
        read_policy(tmp_path)


def test_no_config_means_every_version(tmp_path: Path) -> None:
    assert read_policy(tmp_path).kind == "all"


def test_the_listing_follows_the_policy_and_sees_every_version_on_disk(tmp_path: Path) -> None:
    for version in ("1", "2", "3", "notes", "0"):
        (tmp_path / "mlp" / version).mkdir(parents=True)
    (tmp_path / "mlp" / "config.json").write_text(
        '{"version_policy": {"latest": {"num_versions": 2}}}'
    )
    listing = list_model(tmp_path, "mlp")
    assert sorted(listing.versions) == [2, 3]
    assert listing.on_disk == {1, 2, 3}
    assert list_model(tmp_path, "gone").versions == {}


def test_a_fingerprint_changes_with_a_copy_and_with_a_missing_file(tmp_path: Path) -> None:
    (tmp_path / "model.onnx").write_bytes(b"onnx")
    empty = Fingerprint.of(tmp_path)  # no manifest yet: being copied in
    (tmp_path / "manifest.json").write_text("{}")
    whole = Fingerprint.of(tmp_path)
    assert whole != empty
    assert Fingerprint.of(tmp_path) == whole  # nothing changed
    stat = (tmp_path / "model.onnx").stat()
    os.utime(tmp_path / "model.onnx", ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert Fingerprint.of(tmp_path) != whole  # same size, rewritten
