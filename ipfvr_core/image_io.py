"""Reading reference images safely: size limits from the header first, then decode to upright RGB.

A reference image comes from a user, so :func:`read_image` treats it as hostile: it refuses files
above ``max_bytes`` before reading them, opens only common raster formats, checks the pixel count
the header declares against ``max_pixels`` before any pixel is decoded, and turns every decoding
failure into an :class:`~ipfvr_core.errors.InputError` with a stable code.
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ipfvr_core.errors import InputError

# Formats Pillow may open (JPEG includes multi-picture MPO files). Nothing exotic: EPS, for one,
# hands the data to Ghostscript.
ALLOWED_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF")
# Grayscale modes holding more than 8 bits per sample (16-bit PNG/TIFF), scaled down to 8 bits.
_HIGH_BIT_DEPTH_MODES = frozenset({"I", "I;16", "I;16L", "I;16B", "I;16N"})
# Modes carrying an alpha channel, flattened onto white.
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
# What Pillow raises on damaged or hostile data while decoding (it is not consistent about it).
_DECODE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    IndexError,
    TypeError,
    struct.error,
    zlib.error,
)


def read_image(
    source: str | Path | bytes,
    *,
    field: str = "reference",
    max_pixels: int = 40_000_000,
    max_bytes: int = 50 * 2**20,
) -> np.ndarray:
    """Decode ``source`` (a path or the file's bytes) to an upright (H, W, 3) uint8 RGB array.

    EXIF orientation is applied; grayscale, palette, 16-bit and alpha images become RGB (alpha is
    flattened onto white); an animated image yields its first frame.

    Raises InputError (``field``): ``reference_too_large`` when the file exceeds ``max_bytes`` or
    its header declares more than ``max_pixels`` pixels (checked before decoding any pixel, and
    also when Pillow's own process-wide bomb limit refuses the file); ``invalid_reference`` when
    it is missing, empty, not an image, truncated or corrupt.
    """
    name, data = _read_source(source, field, max_bytes)
    try:
        image = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except Image.DecompressionBombError as exc:
        # Pillow's process-wide limit (Image.MAX_IMAGE_PIXELS) can only refuse more than ours below.
        raise InputError(
            f"{name}: its header declares too many pixels ({exc})", field=field, code="reference_too_large"
        ) from exc
    except UnidentifiedImageError as exc:
        raise InputError(
            f"{name} is not an image in a supported format ({', '.join(ALLOWED_FORMATS)})",
            field=field,
            code="invalid_reference",
        ) from exc
    except _DECODE_ERRORS as exc:
        raise InputError(f"{name} is not a readable image ({exc})", field=field, code="invalid_reference") from exc
    with image:
        width, height = image.size
        if width <= 0 or height <= 0:
            raise InputError(f"{name} declares an empty {width}x{height} image", field=field, code="invalid_reference")
        if width * height > max_pixels:
            raise InputError(
                f"{name} is {width}x{height} = {width * height} pixels, above the limit of {max_pixels}",
                field=field,
                code="reference_too_large",
            )
        try:
            image.load()  # first frame only for animated images
            upright = ImageOps.exif_transpose(image)
            return _to_rgb_array(upright, name, field)
        except Image.DecompressionBombError as exc:
            raise InputError(
                f"{name}: its header declares too many pixels ({exc})", field=field, code="reference_too_large"
            ) from exc
        except _DECODE_ERRORS as exc:
            raise InputError(f"{name} is truncated or corrupt ({exc})", field=field, code="invalid_reference") from exc


def _read_source(source: str | Path | bytes, field: str, max_bytes: int) -> tuple[str, bytes]:
    """The name used in messages and the file's bytes, refusing empty or oversized input unread."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        name, data = "the uploaded image", bytes(source)
        size = len(data)
    else:
        path = Path(source)
        name = path.name or str(path)
        data = b""
        try:
            size = path.stat().st_size
            if path.is_dir():
                raise InputError(f"{path} is a directory, not an image", field=field, code="invalid_reference")
            if 0 < size <= max_bytes:
                with path.open("rb") as handle:
                    data = handle.read(max_bytes + 1)  # bounded even if the file grows meanwhile
                size = len(data)
        except FileNotFoundError as exc:
            raise InputError(f"{path} does not exist", field=field, code="invalid_reference") from exc
        except OSError as exc:
            raise InputError(
                f"{path} cannot be read ({exc.strerror or exc})", field=field, code="invalid_reference"
            ) from exc
    if size == 0:
        raise InputError(f"{name} is empty (0 bytes)", field=field, code="invalid_reference")
    if size > max_bytes:
        raise InputError(
            f"{name} is {size} bytes, above the limit of {max_bytes} bytes", field=field, code="reference_too_large"
        )
    return name, data


def _to_rgb_array(image: Image.Image, name: str, field: str) -> np.ndarray:
    """(H, W, 3) uint8 RGB from any Pillow mode we accept."""
    mode = image.mode
    if mode in _HIGH_BIT_DEPTH_MODES:
        samples = np.asarray(image).astype(np.int64)  # (H, W), 0..65535 for 16-bit sources
        gray = ((np.clip(samples, 0, 65535) * 255 + 32767) // 65535).astype(np.uint8)  # (H, W)
        return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2))  # (H, W, 3)
    if mode == "F":
        raise InputError(
            f"{name} has floating-point pixels, which are not supported", field=field, code="invalid_reference"
        )
    if mode in _ALPHA_MODES or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        rgb = Image.alpha_composite(white, rgba).convert("RGB")
    else:
        rgb = image.convert("RGB")
    return np.array(rgb, dtype=np.uint8)  # (H, W, 3), owned and writable
