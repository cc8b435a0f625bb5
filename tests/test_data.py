"""Datasets: the embedded default, and a clear error when it is missing."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import torch
from eg_testutil import write_idx

import entroguard.data.fashion_mnist as fm
from entroguard.data import load_dataset
from entroguard.errors import DatasetNotFoundError


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    monkeypatch.setattr(fm, "DEBIAN_DIR", tmp_path / "debian")
    monkeypatch.setenv("ENTROGUARD_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("ENTROGUARD_FASHION_MNIST", raising=False)
    return tmp_path


def test_missing_dataset_says_how_to_install(isolated):
    with pytest.raises(DatasetNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_dataset("fashion-mnist", "test")


def test_reads_idx_files_and_pads_to_32(isolated, monkeypatch):
    d = isolated / "fm"
    d.mkdir()
    images = np.arange(5 * 28 * 28).reshape(5, 28, 28) % 256
    write_idx(d / "t10k-images-idx3-ubyte.gz", images)
    write_idx(d / "t10k-labels-idx1-ubyte.gz", np.array([0, 1, 2, 3, 9]))
    monkeypatch.setenv("ENTROGUARD_FASHION_MNIST", str(d))
    ds = load_dataset("fashion-mnist", "test")
    assert ds.images.shape == (5, 1, 32, 32) and ds.labels.tolist() == [0, 1, 2, 3, 9]
    x, y, idx = next(ds.batches(4))
    assert x.shape == (4, 3, 32, 32) and x.dtype == torch.float32
    assert torch.equal(x[:, 0], x[:, 1]) and x[:, :, :2].abs().sum() == 0  # grey, zero-padded
    assert torch.equal(ds.images[1, 0, 2:30, 2:30], torch.from_numpy(images[1].astype(np.uint8)))


def test_truncated_idx_is_a_clear_error(isolated, monkeypatch):
    d = isolated / "fm"
    d.mkdir()
    write_idx(d / "t10k-images-idx3-ubyte.gz", np.zeros((5, 28, 28)))
    with gzip.open(d / "t10k-labels-idx1-ubyte.gz", "wb") as f:
        f.write(bytes([0, 0, 8, 1]) + struct.pack(">I", 10) + b"\x00" * 3)
    monkeypatch.setenv("ENTROGUARD_FASHION_MNIST", str(d))
    with pytest.raises(DatasetNotFoundError, match="truncated"):
        load_dataset("fashion-mnist", "test")


def test_real_fashion_mnist_is_installed():
    """The install script puts the Debian package in place (the embedded default)."""
    test = load_dataset("fashion-mnist", "test")
    assert len(test) == 10_000 and test.images.shape[1:] == (1, 32, 32)
    assert sorted(test.labels.unique().tolist()) == list(range(10))


def test_unknown_dataset():
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset("imagenet")
