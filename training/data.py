"""MNIST-format datasets from gzipped IDX files in a local directory.

Every file is checked against the directory's `SHA256SUMS` before it is parsed, and the IDX
header (magic number, item count, dimensions) is checked against the bytes that follow, so a
missing, truncated or corrupt file fails with a message naming it instead of a shape error later.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import tempfile
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from service.store.manifest import sha256_file  # the one checksum, for datasets and models

SPLITS = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
CHECKSUM_FILE = "SHA256SUMS"
# The IDX magic is 0x0000 then a type code (0x08: unsigned byte) then the number of dimensions.
IDX_UBYTE = 0x08


class DatasetError(Exception):
    """A dataset file is missing, fails its checksum, or is not a well-formed IDX file."""


@dataclass(frozen=True)
class Split:
    """One split of an MNIST-format dataset: uint8 images [N,28,28] and int64 labels [N]."""

    images: npt.NDArray[np.uint8]
    labels: npt.NDArray[np.int64]

    def __len__(self) -> int:
        return len(self.labels)


def default_data_dir(dataset: str = "mnist") -> Path:
    """`DIGITS_DATA_DIR` if set, else `../shared/datasets/<dataset>` beside the project."""
    env = os.environ.get("DIGITS_DATA_DIR")
    if env and dataset == "mnist":
        return Path(env)
    project = Path(__file__).resolve().parent.parent
    return project.parent / "shared" / "datasets" / dataset


def read_checksums(data_dir: Path) -> dict[str, str]:
    """Parse `SHA256SUMS` (`<hex>  <name>` per line) into {name: hex}."""
    path = data_dir / CHECKSUM_FILE
    if not path.is_file():
        raise DatasetError(f"{path}: missing; every dataset directory needs its {CHECKSUM_FILE}")
    sums: dict[str, str] = {}
    for lineno, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or len(parts[0]) != 64:
            raise DatasetError(f"{path}:{lineno}: expected '<sha256>  <file name>', got {line!r}")
        sums[parts[1].lstrip("*")] = parts[0].lower()
    return sums


def verify_file(path: Path, expected_sha256: str) -> None:
    if not path.is_file():
        raise DatasetError(f"{path}: missing")
    actual = sha256_file(path)
    if actual != expected_sha256:
        raise DatasetError(
            f"{path}: sha256 is {actual}, expected {expected_sha256} (corrupt or wrong file)"
        )


def parse_idx(raw: bytes, name: str) -> npt.NDArray[np.uint8]:
    """Parse an uncompressed IDX file of unsigned bytes into an array of its dimensions."""
    if len(raw) < 4:
        raise DatasetError(f"{name}: {len(raw)} bytes is too short for an IDX header")
    if raw[0] != 0 or raw[1] != 0 or raw[2] != IDX_UBYTE:
        raise DatasetError(
            f"{name}: bad magic number 0x{raw[:4].hex()}, expected 0x0000{IDX_UBYTE:02x}NN"
        )
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise DatasetError(f"{name}: truncated header ({ndim} dimensions, {len(raw)} bytes)")
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(dims))
    if len(raw) != expected:
        raise DatasetError(
            f"{name}: dimensions {dims} need {expected} bytes, the file holds {len(raw)} "
            "(truncated or corrupt)"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def read_idx_gz(path: Path) -> npt.NDArray[np.uint8]:
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as exc:
        raise DatasetError(f"{path}: not a readable gzip file ({exc})") from exc
    return parse_idx(raw, str(path))


def load_split(data_dir: Path, split: str, verify: bool = True) -> Split:
    """Load `train` or `test` from a directory of gzipped IDX files with `SHA256SUMS`."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
    image_name, label_name = SPLITS[split]
    if verify:
        sums = read_checksums(data_dir)
        for name in (image_name, label_name):
            if name not in sums:
                raise DatasetError(f"{data_dir / CHECKSUM_FILE}: no checksum for {name}")
            verify_file(data_dir / name, sums[name])
    images = read_idx_gz(data_dir / image_name)
    labels = read_idx_gz(data_dir / label_name)
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise DatasetError(f"{data_dir / image_name}: expected [N,28,28], got {images.shape}")
    if labels.ndim != 1 or len(labels) != len(images):
        raise DatasetError(
            f"{data_dir / label_name}: {labels.shape} labels for {len(images)} images"
        )
    if labels.size and labels.max() > 9:
        raise DatasetError(f"{data_dir / label_name}: label {labels.max()} outside 0-9")
    return Split(images=images, labels=labels.astype(np.int64))


def dataset_checksums(data_dir: Path) -> dict[str, str]:
    """The verified checksums of the four files, for the manifest."""
    sums = read_checksums(data_dir)
    return {name: sums[name] for pair in SPLITS.values() for name in pair}


def download(base_url: str, data_dir: Path, expected: dict[str, str], timeout: float = 60) -> None:
    """Fetch each named file from `base_url` into `data_dir`, checking its sha256.

    Each file is written to a temporary name in the same directory and renamed into place only
    once its checksum matches, so an interrupted or corrupted download never leaves a file that
    looks valid. Files already present with the right checksum are kept.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    for name, sha in expected.items():
        target = data_dir / name
        if target.is_file() and sha256_file(target) == sha:
            continue
        url = base_url.rstrip("/") + "/" + name
        fd, tmp_name = tempfile.mkstemp(dir=data_dir, prefix=f".{name}.", suffix=".part")
        tmp = Path(tmp_name)
        try:
            digest = hashlib.sha256()
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
                for chunk in iter(lambda: resp.read(1 << 20), b""):
                    digest.update(chunk)
                    out.write(chunk)
            if digest.hexdigest() != sha:
                raise DatasetError(
                    f"{url}: downloaded sha256 {digest.hexdigest()}, expected {sha}; discarded"
                )
            tmp.replace(target)
        except OSError as exc:
            raise DatasetError(f"{url}: download failed ({exc})") from exc
        finally:
            tmp.unlink(missing_ok=True)
    lines = "".join(f"{sha}  {name}\n" for name, sha in expected.items())
    (data_dir / CHECKSUM_FILE).write_text(lines)


# The MNIST files as this project distributes them (gzip recompressed, contents original).
MNIST_SHA256 = {
    name: digest
    for digest, name in (
        line.split()
        for line in """
0b367032e93c5d0cea0925647cfdb18614af8ee15f83e6f2fc2ad904a6835971  train-images-idx3-ubyte.gz
1787548bbe0bff1ec2ecdc0ef292b02df999e2d1a6002d27500982c652b17203  train-labels-idx1-ubyte.gz
1a1a05eab793c14bb050b398624a11b0ffd1a2953baed553b1b9bd079e2a20be  t10k-images-idx3-ubyte.gz
b91679a0acfe4ba0e50a2437a903084cba1f5f92592b016a25a7dfd00455798b  t10k-labels-idx1-ubyte.gz
""".strip().splitlines()
    )
}
