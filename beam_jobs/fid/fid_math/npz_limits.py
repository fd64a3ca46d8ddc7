"""Reading statistics ``.npz`` files that may be hostile: every array's header is checked
before numpy allocates it, and a Gaussian fit is checked before it is used.

NumPy allocates an array of the size its ``.npy`` header declares before it reads the
data, so a 2 KB file declaring a 60000 x 60000 float64 array makes it try to allocate
26.8 GiB. :func:`load_npz` reads each member's header first and refuses a declared size
above :data:`MAX_ARRAY_BYTES`, above the member's own stored size, or in total above
:data:`MAX_TOTAL_BYTES`; an object dtype (pickles) or a file that is not a zip (e.g. a
``.npy`` renamed ``.npz``) is refused too. :func:`check_gaussian` refuses a non-finite
``mu`` or ``sigma``, an asymmetric ``sigma`` or one with a clearly negative eigenvalue.
"""
from __future__ import annotations

import io
import zipfile

import numpy as np

from beam_jobs.fid.fid_math.comparability import StatisticsError

MAX_ARRAY_BYTES = 2 << 30  # 2 GiB: a 16k x 16k float64 sigma, or 1M x 2048 float32 features
MAX_TOTAL_BYTES = 4 << 30  # all arrays of one file together
SYMMETRY_RTOL = 1e-6  # |sigma - sigma^T| <= this * max |sigma|
PSD_RTOL = 1e-6  # smallest eigenvalue >= -this * largest |eigenvalue|


def _declared_bytes(member: zipfile.ZipExtFile, name: str, path: str) -> int:
    """The bytes the ``.npy`` header of ``member`` declares (shape x itemsize)."""
    try:
        version = np.lib.format.read_magic(member)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(member)
        else:
            shape, _, dtype = np.lib.format.read_array_header_2_0(member)
    except Exception as err:  # noqa: BLE001 -- numpy raises ValueError, EOFError, ...
        raise StatisticsError(f"{path!r}: member {name!r} is not a .npy array ({err})") from None
    if dtype.hasobject:
        raise StatisticsError(f"{path!r}: member {name!r} holds Python objects (a pickle); "
                              "statistics hold numbers and text only")
    return int(np.prod(shape, dtype=object)) * dtype.itemsize


def check_npz_headers(raw: bytes, path: str, max_array_bytes: int = MAX_ARRAY_BYTES,
                      max_total_bytes: int = MAX_TOTAL_BYTES) -> None:
    """Raises :class:`StatisticsError` (one line) unless ``raw`` is a zip whose ``.npy``
    members each declare at most ``max_array_bytes`` (and no more than the member's
    uncompressed size), ``max_total_bytes`` together. Reads headers only."""
    if raw[:6] == b"\x93NUMPY":
        raise StatisticsError(f"{path!r} is a single .npy array, not an .npz archive; expected "
                              "an .npz with 'mu' [d] and 'sigma' [d, d] (np.savez)")
    try:
        archive = zipfile.ZipFile(io.BytesIO(raw))
    except zipfile.BadZipFile:
        raise StatisticsError(f"{path!r} is not an .npz archive (not a zip file); expected "
                              "an .npz with 'mu' [d] and 'sigma' [d, d]") from None
    total = 0
    with archive:
        for info in archive.infolist():
            name = info.filename
            with archive.open(info) as member:
                declared = _declared_bytes(member, name, path)
            if declared > max_array_bytes or declared > info.file_size:
                raise StatisticsError(
                    f"{path!r}: member {name!r} declares {declared / 2**20:.1f} MiB of data "
                    f"(stored: {info.file_size / 2**20:.1f} MiB, limit "
                    f"{max_array_bytes / 2**20:.0f} MiB); refusing to allocate it")
            total += declared
            if total > max_total_bytes:
                raise StatisticsError(f"{path!r}: its arrays declare over "
                                      f"{max_total_bytes / 2**30:.0f} GiB together; refusing")


def load_npz(raw: bytes, path: str) -> np.lib.npyio.NpzFile:
    """``np.load`` of the ``.npz`` bytes ``raw`` after :func:`check_npz_headers`
    (``allow_pickle=False``); a numpy failure is a :class:`StatisticsError` naming
    ``path``."""
    check_npz_headers(raw, path)
    try:
        data = np.load(io.BytesIO(raw), allow_pickle=False)
    except Exception as err:  # noqa: BLE001 -- numpy raises several types for a bad file
        raise StatisticsError(f"{path!r} is not a readable .npz statistics file: {err}") from err
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise StatisticsError(f"{path!r} is not an .npz archive")
    return data


def check_gaussian(mu: np.ndarray, sigma: np.ndarray, path: str) -> None:
    """Raises :class:`StatisticsError` unless ``mu`` [d] and ``sigma`` [d, d] are finite and
    ``sigma`` is a covariance: symmetric within :data:`SYMMETRY_RTOL` and positive
    semi-definite within :data:`PSD_RTOL` (relative to its largest entry / eigenvalue)."""
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise StatisticsError(f"{path!r}: mu or sigma holds NaN or Inf")
    scale = float(np.abs(sigma).max()) if sigma.size else 0.0
    asymmetry = float(np.abs(sigma - sigma.T).max()) if sigma.size else 0.0
    if asymmetry > SYMMETRY_RTOL * max(scale, 1e-300):
        raise StatisticsError(f"{path!r}: sigma is not symmetric (max |sigma - sigma^T| = "
                              f"{asymmetry:.3g}, max |sigma| = {scale:.3g}); not a covariance")
    if sigma.size:
        eigenvalues = np.linalg.eigvalsh(sigma)
        largest = float(np.abs(eigenvalues).max())
        if eigenvalues[0] < -PSD_RTOL * max(largest, 1e-300):
            raise StatisticsError(f"{path!r}: sigma has a negative eigenvalue "
                                  f"({eigenvalues[0]:.3g}; largest {largest:.3g}); not a "
                                  "covariance")
