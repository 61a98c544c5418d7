"""Image files as the readers see them: extensions, header sizes, file identity.

``image_header(path)`` reads the size from the file header without decoding pixels (Pillow
opens lazily), so checking thousands of images costs milliseconds each. The size returned is
the size of the *stored* pixel array, because that is what the loader decodes
(``cv2.imread(..., IMREAD_UNCHANGED)`` ignores the EXIF orientation tag). The EXIF
orientation of JPEG and TIFF files is returned alongside, so readers can report images that
viewers show rotated or mirrored (tags 2-8): labels drawn on the rotated view do not match the
stored pixels. 16-bit PNG/TIFF and float TIFF headers are read like any other; files Pillow
cannot parse (some TIFF variants, very large scenes) are decoded with OpenCV instead.
Results are cached per path and invalidated when the file's size or modification time changes.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

__all__ = [
    "IMAGE_EXTS",
    "ImageHeader",
    "file_identity",
    "image_header",
    "is_image_file",
]

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")
# EXIF orientations whose display swaps width and height (transpose / rotate 90 / 270).
SWAPS_AXES = frozenset({5, 6, 7, 8})


@dataclass(frozen=True)
class ImageHeader:
    """Stored size in pixels and the EXIF orientation (1 = as stored, 2-8 = shown transformed)."""

    height: int
    width: int
    orientation: int = 1

    @property
    def displayed_size(self) -> tuple[int, int]:
        """(height, width) as an EXIF-aware viewer shows the image."""
        if self.orientation in SWAPS_AXES:
            return self.width, self.height
        return self.height, self.width


_CACHE: dict[str, tuple[int, int, ImageHeader | None]] = {}


def is_image_file(name: str) -> bool:
    """True if ``name`` ends with one of :data:`IMAGE_EXTS` (any case)."""
    return name.lower().endswith(IMAGE_EXTS)


def file_identity(path: str) -> tuple[int, int] | None:
    """``(device, inode)`` of ``path`` (the same for symlinks and hard links), None if absent."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def image_header(path: str) -> ImageHeader | None:
    """Size and EXIF orientation of the image at ``path``, or None if it cannot be read."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    hit = _CACHE.get(path)
    if hit is not None and hit[0] == st.st_mtime_ns and hit[1] == st.st_size:
        return hit[2]
    header = _read_header(path)
    _CACHE[path] = (st.st_mtime_ns, st.st_size, header)
    return header


def _read_header(path: str) -> ImageHeader | None:
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow warns about odd EXIF blocks and large images
        try:
            with Image.open(path) as im:
                width, height = im.size
                orientation = _orientation(im)
            if width > 0 and height > 0:
                return ImageHeader(int(height), int(width), orientation)
        except Exception:  # noqa: BLE001 - Pillow lacks some TIFF codecs; OpenCV may have them
            pass
    return _decoded_size(path)


def _orientation(im) -> int:
    try:
        if im.format in ("JPEG", "MPO"):
            value = im.getexif().get(0x0112, 1)
        elif im.format == "TIFF":
            value = im.tag_v2.get(0x0112, 1)
        else:
            return 1
        value = int(value)
    except Exception:  # noqa: BLE001 - a broken EXIF block means no usable orientation
        return 1
    return value if 1 <= value <= 8 else 1


def _decoded_size(path: str) -> ImageHeader | None:
    from detlab.data.transforms import read_image  # the loader's own decoder

    img = read_image(path)
    return None if img is None else ImageHeader(int(img.shape[0]), int(img.shape[1]), 1)
