"""IDX reading/writing, the Fashion-MNIST tensor cache, and batched augmentation."""

from __future__ import annotations

import gzip
import shutil

import pytest
import torch

from helpers import write_idx
from pipeline.images import data as images
from pipeline.devices import make_generator
from pipeline.errors import DataError
from pipeline.images.data import CLASS_NAMES, augment, load_fashion, raw_files, read_idx

CPU = torch.device("cpu")


def _pixels(n: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 28, 28), dtype=torch.uint8, generator=generator)


def _labels(n: int) -> torch.Tensor:
    return (torch.arange(n) % 10).to(torch.uint8)


def _write_fashion(data_dir, n_train: int = 12, n_test: int = 5, n_train_labels: int | None = None):
    files = raw_files(data_dir)
    write_idx(files["train_images"], _pixels(n_train))
    write_idx(files["train_labels"], _labels(n_train if n_train_labels is None else n_train_labels))
    write_idx(files["test_images"], _pixels(n_test, seed=1))
    write_idx(files["test_labels"], _labels(n_test))
    return files


@pytest.mark.parametrize("name", ["x-idx3-ubyte", "x-idx3-ubyte.gz"])
def test_idx_round_trip(tmp_path, name):
    for tensor in (_pixels(7), _labels(7)):
        path = write_idx(tmp_path / name, tensor)
        assert (path.read_bytes()[:2] == b"\x1f\x8b") == name.endswith(".gz")
        back = read_idx(path)
        assert back.dtype == torch.uint8 and torch.equal(back, tensor)


def _header(magic: int, *dims: int) -> bytes:
    return magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in dims)


@pytest.mark.parametrize(
    "payload, message",
    [
        (_header(0x00000802, 3, 4) + bytes(12), "bad magic 0x00000802"),
        (_header(0x00000D03, 2, 2, 2) + bytes(32), "element type 0x0d"),
        (b"\x00\x00", "only 2 bytes"),
        (_header(0x00000803, 2)[:8], "truncated header"),
        (_header(0x00000803, 2000, 28, 28) + bytes(1000),
         r"truncated: expected 1568000 bytes of pixels, found 1000 \(dims \[2000, 28, 28\]\)"),
        (_header(0x00000801, 10) + bytes(7), "expected 10 bytes of labels"),
        (_header(0x00000801, 3) + bytes(5), "2 bytes too many: expected 3 of labels"),
    ],
    ids=["magic", "dtype", "tiny", "header", "pixels", "labels", "trailing"],
)
def test_malformed_idx_is_a_data_error(tmp_path, payload, message):
    path = tmp_path / "bad-idx"
    path.write_bytes(payload)
    with pytest.raises(DataError, match=message) as info:
        read_idx(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_corrupt_gzip_is_a_data_error(tmp_path):
    good = gzip.compress(_header(0x00000803, 50, 28, 28) + _pixels(50).numpy().tobytes())
    cut, flipped = tmp_path / "cut.gz", tmp_path / "flipped.gz"
    cut.write_bytes(good[: len(good) // 2])
    flipped.write_bytes(good[:-8] + bytes(b ^ 0xFF for b in good[-8:]))  # CRC and length trailer
    for path in (cut, flipped):
        with pytest.raises(DataError, match="corrupt gzip"):
            read_idx(path)


def test_load_fashion_caches_tensors_and_rebuilds_on_change(tmp_path, monkeypatch):
    files = _write_fashion(tmp_path)
    first = load_fashion(tmp_path)
    assert first.train_images.shape == (12, 28, 28) and first.test_labels.shape == (5,)
    cache = files["train_images"].parent / images.CACHE_NAME
    assert set(torch.load(cache, weights_only=True)) >= {"key", "train_images", "test_labels"}

    def no_raw_reads(path):
        raise AssertionError(f"read {path} although the cache is fresh")

    monkeypatch.setattr(images, "read_idx", no_raw_reads)
    second = load_fashion(tmp_path)
    assert torch.equal(second.train_images, first.train_images)
    monkeypatch.undo()

    write_idx(files["test_images"], _pixels(9, seed=2))
    write_idx(files["test_labels"], _labels(9))
    rebuilt = load_fashion(tmp_path)
    assert torch.equal(rebuilt.test_images, _pixels(9, seed=2))

    cache.write_bytes(b"not a torch file")  # a damaged cache is rebuilt, not an error
    assert torch.equal(load_fashion(tmp_path).test_images, _pixels(9, seed=2))
    assert torch.load(cache, weights_only=True)["test_images"].shape == (9, 28, 28)


def test_load_fashion_errors(tmp_path):
    with pytest.raises(DataError, match="run `pipeline download fashion`"):
        load_fashion(tmp_path)
    _write_fashion(tmp_path, n_train=12, n_train_labels=11)
    expected = "train-images-idx3-ubyte.gz has 12 images but train-labels-idx1-ubyte.gz has 11 labels"
    with pytest.raises(DataError, match=expected):
        load_fashion(tmp_path)


def test_augment_crops_and_flips_whole_batches():
    x = _pixels(64)
    out = augment(x, make_generator(0, CPU))
    assert out.shape == x.shape and out.dtype == torch.uint8
    assert (out != x).flatten(1).any(1).sum() > 32
    assert torch.equal(out, augment(x, make_generator(0, CPU)))
    assert augment(x.float().unsqueeze(1), make_generator(0, CPU)).shape == (64, 1, 28, 28)

    flipped = augment(x, make_generator(1, CPU), pad=0)
    same = (flipped == x).flatten(1).all(1)
    mirrored = (flipped == x.flip(-1)).flatten(1).all(1)
    assert (same | mirrored).all() and same.any() and mirrored.any()

    shifted = augment(x[:8], make_generator(2, CPU), pad=2, flip=False)
    padded = torch.nn.functional.pad(x[:8], (2, 2, 2, 2))
    for sample, src in zip(shifted, padded):
        crops = [src[dy: dy + 28, dx: dx + 28] for dy in range(5) for dx in range(5)]
        assert any(torch.equal(sample, crop) for crop in crops)


def _copy_real(shared_datasets, tmp_path):
    folder = tmp_path / "fashion-mnist"
    folder.mkdir()
    for path in (shared_datasets / "fashion-mnist").glob("*-ubyte.gz"):
        shutil.copy(path, folder / path.name)
    return folder


def test_real_fashion_mnist(shared_datasets, tmp_path):
    _copy_real(shared_datasets, tmp_path)
    data = load_fashion(tmp_path)
    assert data.train_images.shape == (60000, 28, 28) and data.test_images.shape == (10000, 28, 28)
    assert data.train_images.dtype == torch.uint8
    assert torch.equal(data.train_labels.long().bincount(), torch.full((10,), 6000))
    assert torch.equal(data.test_labels.long().bincount(), torch.full((10,), 1000))
    assert len(CLASS_NAMES) == 10 and CLASS_NAMES[9] == "Ankle boot"
    assert torch.equal(load_fashion(tmp_path).test_images, data.test_images)  # now from the cache
