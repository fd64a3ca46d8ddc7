"""Decode -> colour convert -> resize shorter side -> center crop -> PNG, for one image
(:class:`ImageTransform`, the preprocessing job's), and the pixels of a source record at
its own size (:func:`pixels_of`, the FID job's): both decode with :func:`decode_image` and
convert to 8 bits with :func:`to_8bit`, the one place 16-bit images are handled.

TensorFlow-free on purpose: Beam workers import only Pillow and NumPy.

Resampling is Pillow's ``Image.LANCZOS`` (a 3-lobe Lanczos windowed sinc whose support
scales with the reduction factor, i.e. antialiased when shrinking), applied in one step
(``reducing_gap=None``: no JPEG draft decoding and no box pre-reduction), so the output
depends only on the decoded pixels.
"""
from __future__ import annotations

import dataclasses
import io
import math
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError

MAX_SIDE = 20000  # px; larger images are treated as bad records (absurd dimensions)
MIN_SIDE = 1
RESAMPLE_NAME = "LANCZOS"
_RESAMPLE = Image.Resampling.LANCZOS


class BadImage(ValueError):
    """A record that cannot become a training image; ``str(e)`` is the reason."""


@dataclasses.dataclass(frozen=True)
class ImageTransform:
    """The exact per-image transform of the preprocessing job.

    Attributes:
      image_size: output height = width, px.
      resize_shorter_side: the shorter side is first resized to this many px (default:
        image_size); must be >= image_size. Ignored when ``center_crop`` is False.
      center_crop: crop the central image_size x image_size window after the resize; if
        False the whole image is resized to image_size x image_size (aspect not kept).
      grayscale: output 1 channel (ITU-R 601-2 luma for colour inputs) instead of RGB.
      png_compress_level: zlib level of the PNG encoder (0-9).
    """

    image_size: int
    resize_shorter_side: int | None = None
    center_crop: bool = True
    grayscale: bool = False
    png_compress_level: int = 6

    def __post_init__(self) -> None:
        if not isinstance(self.image_size, int) or not MIN_SIDE <= self.image_size <= MAX_SIDE:
            raise ValueError(f"image_size={self.image_size!r}: expected an int in "
                             f"[{MIN_SIDE}, {MAX_SIDE}]")
        if self.resize_shorter_side is not None:
            if not self.center_crop:
                raise ValueError("resize_shorter_side needs center_crop=True (without a crop "
                                 "the image is resized straight to image_size x image_size)")
            if not isinstance(self.resize_shorter_side, int) or not (
                    self.image_size <= self.resize_shorter_side <= MAX_SIDE):
                raise ValueError(
                    f"resize_shorter_side={self.resize_shorter_side!r}: expected an int in "
                    f"[image_size={self.image_size}, {MAX_SIDE}]")
        if not 0 <= self.png_compress_level <= 9:
            raise ValueError(f"png_compress_level={self.png_compress_level}: expected 0..9")

    @property
    def channels(self) -> int:
        return 1 if self.grayscale else 3

    @property
    def shorter_side(self) -> int:
        return self.resize_shorter_side or self.image_size

    def describe(self) -> dict:
        """The parameters as stored in dataset.json["transform"]."""
        import PIL

        return {
            "image_size": self.image_size,
            "resize_shorter_side": self.shorter_side if self.center_crop else None,
            "center_crop": self.center_crop,
            "resize": ("shorter side to resize_shorter_side, then center crop"
                       if self.center_crop else "whole image to image_size x image_size"),
            "filter": RESAMPLE_NAME,
            "reducing_gap": None,
            "library": f"Pillow {PIL.__version__}",
            "passthrough": "images already at the output size are not resampled",
            "color": ("grayscale: L, colour -> ITU-R 601-2 luma" if self.grayscale else
                      "RGB: grey replicated, palette expanded, alpha dropped, CMYK converted"),
            "channels": self.channels,
            "encoding": "png",
            "png_compress_level": self.png_compress_level,
        }

    # -- stages ---------------------------------------------------------------------------

    def decode(self, data: bytes) -> Image.Image:
        """Encoded bytes (any Pillow format) -> loaded image (first frame); BadImage if not."""
        return decode_image(data)

    def to_mode(self, img: Image.Image) -> Image.Image:
        """Converts any Pillow mode to 'RGB' (or 'L' with grayscale), 8 bits per channel."""
        return to_8bit(img, self.grayscale)

    def resize_crop(self, img: Image.Image) -> Image.Image:
        """Resizes the shorter side and center-crops to image_size (no-op at that size)."""
        size = self.image_size
        w, h = img.size
        if (w, h) == (size, size):
            return img
        if not self.center_crop:
            return img.resize((size, size), _RESAMPLE)
        s = self.shorter_side
        if min(w, h) != s:
            if w <= h:
                w, h = s, max(s, int(math.floor(h * s / w + 0.5)))
            else:
                w, h = max(s, int(math.floor(w * s / h + 0.5))), s
            img = img.resize((w, h), _RESAMPLE)
        if (w, h) != (size, size):
            left, top = (w - size) // 2, (h - size) // 2
            img = img.crop((left, top, left + size, top + size))
        return img

    def encode(self, img: Image.Image) -> bytes:
        buf = io.BytesIO()
        img.save(buf, format="PNG", compress_level=self.png_compress_level)
        return buf.getvalue()

    # -- whole transform ------------------------------------------------------------------

    def from_bytes(self, data: bytes) -> bytes:
        """Encoded image bytes -> PNG bytes of a uint8 [image_size, image_size, C] image."""
        return self.encode(self.resize_crop(self.to_mode(self.decode(data))))

    def from_array(self, arr: np.ndarray) -> bytes:
        """uint8 [H, W] (grey) or [H, W, 3] (RGB) -> PNG bytes; pixel-exact at output size."""
        arr = check_array(arr)
        if arr.ndim == 3 and arr.shape[2] == 1:
            arr = arr[:, :, 0]
        img = Image.fromarray(np.ascontiguousarray(arr), "L" if arr.ndim == 2 else "RGB")
        return self.encode(self.resize_crop(self.to_mode(img)))


def check_size(size: tuple[int, int]) -> None:
    """BadImage unless both sides (px) are within [MIN_SIDE, MAX_SIDE]."""
    w, h = size
    if not (MIN_SIDE <= w <= MAX_SIDE and MIN_SIDE <= h <= MAX_SIDE):
        raise BadImage(f"absurd dimensions {w}x{h} px (expected sides in "
                       f"[{MIN_SIDE}, {MAX_SIDE}])")


# -- what both jobs read pixels through -------------------------------------------------

SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
GREY_MODES = ("1", "L") + SIXTEEN_BIT_MODES  # read as 1 channel by pixels_of


def decode_image(data: bytes) -> Image.Image:
    """Encoded bytes (any Pillow format) -> loaded image (first frame); BadImage if not."""
    if not data:
        raise BadImage("zero-size record")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img = Image.open(io.BytesIO(data))
            check_size(img.size)
            img.load()
    except BadImage:
        raise
    except UnidentifiedImageError:
        raise BadImage(f"not a decodable image ({len(data)} bytes, unknown format)") from None
    except Image.DecompressionBombError as e:
        raise BadImage(f"absurd dimensions: {e}") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError,
            MemoryError) as e:
        raise BadImage(f"decode failed ({type(e).__name__}: {e})") from None
    return img


def to_8bit(img: Image.Image, grayscale: bool) -> Image.Image:
    """Any Pillow mode -> 'L' (``grayscale``; ITU-R 601-2 luma for colour) or 'RGB', 8 bits
    per channel. 16-bit and 32-bit integer images in [0, 65535] keep their high byte
    (``>> 8``) when any value exceeds 255, else their values; mode F is a BadImage."""
    target = "L" if grayscale else "RGB"
    if img.mode == target:
        return img
    if img.mode in SIXTEEN_BIT_MODES:
        arr = np.asarray(img)
        if arr.size and (arr.min() < 0 or arr.max() > 65535):
            raise BadImage(f"mode {img.mode}: values outside [0, 65535]")
        img = Image.fromarray((arr.astype(np.uint32) >> 8).astype(np.uint8)
                              if arr.size and arr.max() > 255 else arr.astype(np.uint8), "L")
    elif img.mode == "F":
        raise BadImage("floating-point image (mode F) has no defined 8-bit range")
    try:
        if img.mode in ("CMYK", "YCbCr", "LAB", "HSV") and target == "L":
            img = img.convert("RGB")
        return img.convert(target)
    except ValueError as e:
        raise BadImage(f"cannot convert mode {img.mode} to {target}: {e}") from None


def pixels_of(payload: bytes | np.ndarray | BadImage) -> np.ndarray:
    """A source reader's payload at its own size -> uint8 [H, W, 1] for grey images (modes
    :data:`GREY_MODES`, [H, W] or [H, W, 1] arrays) or [H, W, 3] for all others (alpha
    dropped, palette expanded), through :func:`decode_image` and :func:`to_8bit` as the
    preprocessing job reads them. BadImage for an unreadable payload."""
    if isinstance(payload, BadImage):
        raise payload
    if isinstance(payload, (bytes, bytearray, memoryview)):
        img = decode_image(bytes(payload))
        arr = np.asarray(to_8bit(img, img.mode in GREY_MODES), np.uint8)
    else:
        arr = check_array(payload)
    return arr[..., None] if arr.ndim == 2 else arr


def check_array(arr: np.ndarray) -> np.ndarray:
    """``arr`` as an array; BadImage unless uint8 [H, W] or [H, W, 1|3] of sides in
    [MIN_SIDE, MAX_SIDE] px."""
    arr = np.asarray(arr)
    if arr.dtype != np.uint8 or not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (1, 3))):
        raise BadImage(f"array of dtype {arr.dtype} shape {arr.shape}: expected uint8 "
                       "[H, W] or [H, W, 1|3]")
    check_size((arr.shape[1], arr.shape[0]))
    return arr

