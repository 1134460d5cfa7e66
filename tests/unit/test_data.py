"""The IDX loader: checksums, headers, truncation, and the download over a loopback server."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from training import data


def write_dataset(directory: Path, images: np.ndarray, labels: np.ndarray) -> None:
    """A tiny MNIST-format dataset (both splits the same) with its SHA256SUMS."""
    directory.mkdir(parents=True, exist_ok=True)
    n = len(labels)
    image_bytes = (
        bytes([0, 0, 8, 3])
        + b"".join(d.to_bytes(4, "big") for d in (n, 28, 28))
        + images.astype(np.uint8).tobytes()
    )
    label_bytes = bytes([0, 0, 8, 1]) + n.to_bytes(4, "big") + labels.astype(np.uint8).tobytes()
    for image_name, label_name in data.SPLITS.values():
        (directory / image_name).write_bytes(gzip.compress(image_bytes))
        (directory / label_name).write_bytes(gzip.compress(label_bytes))
    rewrite_checksums(directory)


def rewrite_checksums(directory: Path) -> None:
    lines = [
        f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.name}\n"
        for p in sorted(directory.glob("*.gz"))
    ]
    (directory / data.CHECKSUM_FILE).write_text("".join(lines))


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    write_dataset(tmp_path / "tiny", rng.integers(0, 256, (7, 28, 28)), np.arange(7) % 10)
    return tmp_path / "tiny"


def test_real_mnist_loads_with_verified_checksums(mnist_dir: Path) -> None:
    test = data.load_split(mnist_dir, "test")
    assert test.images.shape == (10000, 28, 28)
    assert test.images.dtype == np.uint8
    assert np.bincount(test.labels).tolist()[:3] == [980, 1135, 1032]


def test_tiny_dataset_round_trips(tiny: Path) -> None:
    split = data.load_split(tiny, "train")
    assert split.images.shape == (7, 28, 28)
    assert split.labels.tolist() == list(range(7))


def test_wrong_checksum_is_rejected(tiny: Path) -> None:
    sums = (tiny / data.CHECKSUM_FILE).read_text().replace("t10k-images", "x", 1)
    sums += f"{'0' * 64}  t10k-images-idx3-ubyte.gz\n"
    (tiny / data.CHECKSUM_FILE).write_text(sums)
    with pytest.raises(data.DatasetError, match=r"t10k-images-idx3-ubyte\.gz: sha256 is"):
        data.load_split(tiny, "test")


def test_missing_file_is_named(tiny: Path) -> None:
    (tiny / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(data.DatasetError, match=r"train-labels-idx1-ubyte\.gz: missing"):
        data.load_split(tiny, "train")


def test_truncated_file_is_rejected(tiny: Path) -> None:
    path = tiny / "train-images-idx3-ubyte.gz"
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw[:-100]))
    rewrite_checksums(tiny)
    with pytest.raises(data.DatasetError, match="truncated or corrupt"):
        data.load_split(tiny, "train")


def test_truncated_gzip_stream_is_rejected(tiny: Path) -> None:
    path = tiny / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-20])
    rewrite_checksums(tiny)
    with pytest.raises(data.DatasetError, match="not a readable gzip file"):
        data.load_split(tiny, "train")


def test_bad_magic_number_is_rejected(tiny: Path) -> None:
    path = tiny / "train-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.decompress(path.read_bytes()))
    raw[2] = 0x0D  # float32 instead of unsigned byte
    path.write_bytes(gzip.compress(bytes(raw)))
    rewrite_checksums(tiny)
    with pytest.raises(data.DatasetError, match="bad magic number"):
        data.load_split(tiny, "train")


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def served(tmp_path: Path, tiny: Path) -> Iterator[tuple[str, Path]]:
    """The tiny dataset's files served over HTTP on 127.0.0.1, from a copy we can corrupt."""
    root = tmp_path / "www"
    shutil.copytree(tiny, root)

    def handler(*args: object, **kwargs: object) -> QuietHandler:
        return QuietHandler(*args, directory=str(root), **kwargs)  # type: ignore[arg-type]

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", root
    finally:
        server.shutdown()
        server.server_close()


def test_download_verifies_and_writes_loadable_files(
    served: tuple[str, Path], tiny: Path, tmp_path: Path
) -> None:
    url, _ = served
    expected = data.dataset_checksums(tiny)
    target = tmp_path / "downloaded"
    data.download(url, target, expected)
    assert data.load_split(target, "test").labels.tolist() == list(range(7))
    assert not list(target.glob(".*.part"))


def test_corrupted_download_is_rejected_and_leaves_nothing(
    served: tuple[str, Path], tiny: Path, tmp_path: Path
) -> None:
    url, root = served
    expected = data.dataset_checksums(tiny)
    corrupt = root / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(corrupt.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    corrupt.write_bytes(bytes(raw))
    target = tmp_path / "downloaded"
    with pytest.raises(data.DatasetError, match=r"t10k-labels-idx1-ubyte\.gz: downloaded sha256"):
        data.download(url, target, expected)
    assert not (target / "t10k-labels-idx1-ubyte.gz").exists()
    assert not list(target.glob(".*.part"))


def test_download_of_a_missing_file_fails_clearly(
    served: tuple[str, Path], tiny: Path, tmp_path: Path
) -> None:
    url, root = served
    (root / "train-images-idx3-ubyte.gz").unlink()
    with pytest.raises(data.DatasetError, match="download failed"):
        data.download(url, tmp_path / "downloaded", data.dataset_checksums(tiny))
