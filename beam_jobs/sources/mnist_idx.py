"""Readers for MNIST's IDX files (optionally gzip-compressed).

The format (http://yann.lecun.com/exdb/mnist/): a big-endian header of a magic number
whose third byte is the element type (0x08 = uint8) and whose fourth byte is the number
of dimensions, then one uint32 per dimension, then the data in C order.
"""
from __future__ import annotations

import gzip
import os

import numpy as np

_UINT8 = 0x08

MNIST_TEST_IMAGES = "t10k-images-idx3-ubyte.gz"
MNIST_TEST_LABELS = "t10k-labels-idx1-ubyte.gz"


def read_idx(path: str) -> np.ndarray:
    """Returns the uint8 array stored in an IDX file (``.gz`` is decompressed); ``path`` is
    local or on any Beam filesystem."""
    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.filesystems import FileSystems

    if not FileSystems.exists(path):
        raise FileNotFoundError(f"IDX file {path!r} does not exist")
    with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as raw:
        data = raw.read()
    if path.endswith(".gz"):
        data = gzip.decompress(data)
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{path!r} is not an IDX file (bad magic number)")
    if data[2] != _UINT8:
        raise ValueError(f"{path!r}: element type 0x{data[2]:02x}, expected 0x08 (uint8)")
    ndim = data[3]
    header = 4 + 4 * ndim
    shape = tuple(int(d) for d in np.frombuffer(data[4:header], dtype=">u4"))
    expected = int(np.prod(shape))
    if len(data) - header != expected:
        raise ValueError(
            f"{path!r}: header says shape {shape} ({expected} bytes), "
            f"file holds {len(data) - header} data bytes (truncated or corrupt)")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def load_mnist(directory: str, images_file: str = MNIST_TEST_IMAGES,
               labels_file: str = MNIST_TEST_LABELS) -> tuple[np.ndarray, np.ndarray]:
    """Returns (images uint8 [N, 28, 28] in [0, 255], labels uint8 [N]) from a folder."""
    images = read_idx(os.path.join(directory, images_file))
    labels = read_idx(os.path.join(directory, labels_file))
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise ValueError(
            f"MNIST files in {directory!r} disagree: images {images.shape}, labels {labels.shape}")
    return images, labels
