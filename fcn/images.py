"""Images and label files as every part of the project opens them: one size policy
(refused from the header, before any pixel is decoded, when larger than any net can
take), one preprocessing (RGB -> BGR minus the mean), photos decoded as inference
reads them (EXIF orientation, any mode), dataset images and labels as the readers
read them (RGB arrays, index PNGs, MATLAB files). A DataError (one line naming the
file) for anything that cannot be read."""
import struct
import zlib
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image, ImageOps, UnidentifiedImageError

from fcn.errors import DataError


def preprocess(rgb, mean_bgr):
    """HxWx3 RGB image (any numeric dtype) -> 3xHxW float32 BGR minus the mean (each
    value cast to float32, then the float32 mean subtracted), one channel at a time into
    the result (a training iteration of make demo reads one image: 2.7 ms -> 0.3 ms)."""
    rgb = np.asarray(rgb)
    mean = np.asarray(mean_bgr, dtype=np.float32)
    out = np.empty((3, *rgb.shape[:2]), np.float32)
    for c in range(3):
        np.subtract(rgb[:, :, 2 - c], mean[c], out=out[c], dtype=np.float32)
    return out





# One size policy for every image the project opens (datasets, infer.py, reference.py,
# prepare.py check): the header is read first and an image is refused before any pixel
# is decoded when it is larger than the largest input any net can take, a 3-channel
# float blob within Caffe's 2^31 - 1 elements. PIL's own bomb check (a warning, then a
# traceback) is replaced by this one; infer.py adds its memory model on top.
MAX_PIXELS = (2 ** 31 - 1) // 3
Image.MAX_IMAGE_PIXELS = None


def open_image(path, what="image"):
    """The image at ``path`` with its header read and no pixel decoded yet; a DataError
    (one line naming the file) if it is missing, not an image, has no pixels or has
    more than MAX_PIXELS."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{what} not found: {path}")
    if path.is_dir():
        raise DataError(f"{path} is a folder, not an {what} file")
    try:
        im = Image.open(path)
    except UnidentifiedImageError:
        size = header_size(path)
        if size and 0 in size:
            raise DataError(f"{what} has no pixels: {path} is {size[0]}x{size[1]}") from None
        raise DataError(f"not an image (or a format Pillow cannot read): {path}") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise DataError(f"unreadable {what} {path}: {e}") from None
    w, h = im.size
    if w * h == 0:
        raise DataError(f"{what} has no pixels: {path} is {w}x{h}")
    if w * h > MAX_PIXELS:
        side = int((MAX_PIXELS * max(w, h) / min(w, h)) ** 0.5)
        raise DataError(f"{what} {path} is {w}x{h} ({w * h / 1e6:.0f} megapixels), more than "
                        f"the {MAX_PIXELS / 1e6:.0f} megapixels a net can take; resize it to at "
                        f"most about {side} px on the long side")
    return im


def decoded(im, path, what="image"):
    """Decode every pixel of an image from open_image; a DataError if that fails."""
    try:
        im.load()
        return im
    except (OSError, SyntaxError, ValueError) as e:
        raise DataError(f"unreadable {what} {path}: {e}") from None


def read_image(path, what="image"):
    """open_image + decoded: a fully decoded image, or one line naming the file."""
    return decoded(open_image(path, what), path, what)


def photo_rgb(im, path="image"):
    """A photo from open_image decoded to HxWx3 uint8 RGB, as inference reads it:
    EXIF orientation applied; 16-bit / 32-bit / float greyscale scaled to 8 bits;
    alpha dropped; palettes expanded. (Dataset images use rgb_array: no EXIF
    rotation, which would part them from their labels.)"""
    decoded(im, path)
    try:
        im = ImageOps.exif_transpose(im)
        if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
            a = np.asarray(im, dtype=np.float64)
            top = 65535.0 if im.mode.startswith("I;16") or a.max(initial=0) > 255 else 255.0
            if im.mode in ("I", "F") and a.max(initial=0) > 65535:
                top = float(a.max())
            grey = np.clip(a * (255.0 / top), 0, 255).astype(np.uint8)
            return np.repeat(grey[:, :, None], 3, axis=2)
        if im.mode != "RGB":
            im = im.convert("RGBA").convert("RGB") if im.mode == "P" else im.convert("RGB")
        return np.asarray(im, dtype=np.uint8)
    except (OSError, ValueError, SyntaxError) as e:
        raise DataError(f"unreadable image {path}: {e}") from None


def orientation(im):
    """EXIF orientation from the header alone (1 if none), without decoding pixels."""
    raw = im.info.get("exif")
    if not raw:
        return 1
    try:
        exif = Image.Exif()
        exif.load(raw)
        return int(exif.get(0x0112, 1))
    except Exception:  # a damaged EXIF block is not worth refusing the image for
        return 1


def load_photo(path):
    """open_image + photo_rgb."""
    return photo_rgb(open_image(path), path)


def header_only_png(path, w, h):
    """A PNG whose header claims w x h pixels and which holds none: what the size
    policy refuses before decoding (tests, the GPU check's memory part)."""
    def chunk(kind, body):
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xffffffff))
    Path(path).write_bytes(b"\x89PNG\r\n\x1a\n"
                           + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                           + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b""))
    return path


def header_size(path):
    """(width, height) from a PNG, BMP or PNM header, for files Pillow refuses to open
    (it refuses images with no pixels); None if it is none of those."""
    with open(path, "rb") as f:
        head = f.read(64)
    if head[:8] == b"\x89PNG\r\n\x1a\n" and len(head) >= 24:
        return struct.unpack(">II", head[16:24])
    if head[:2] == b"BM" and len(head) >= 26:
        w, h = struct.unpack("<ii", head[18:26])
        return w, abs(h)
    if head[:1] == b"P" and head[1:2] in b"123456":
        tokens = [t for t in head[2:].split() if not t.startswith(b"#")]
        if len(tokens) >= 2 and tokens[0].isdigit() and tokens[1].isdigit():
            return int(tokens[0]), int(tokens[1])
    return None


def load_mat(path, key, what="label"):
    """Variable ``key`` of a MATLAB file (SBD, NYUDv2, SIFT Flow, PASCAL-Context)."""
    try:
        mat = scipy.io.loadmat(str(path), squeeze_me=True, struct_as_record=False)
    except FileNotFoundError:
        raise DataError(f"missing {what}: {path}") from None
    except Exception as e:  # scipy raises a zoo of types for broken files
        raise DataError(f"unreadable {what} {path}: {e}") from None
    if key not in mat:
        has = ", ".join(k for k in mat if not k.startswith("__"))
        raise DataError(f"{path} has no '{key}' variable (has: {has})")
    return mat[key]


def rgb_array(path):
    """A dataset image as HxWx3 uint8 RGB (no EXIF rotation: it would part it from its
    label)."""
    im = read_image(path)
    if im.mode != "RGB":
        im = im.convert("RGB")
    return np.asarray(im)


def index_png(path):
    """Class-index PNG (palette 'P' or greyscale 'L') -> HxW uint8."""
    im = read_image(path, "label")
    if im.mode not in ("P", "L"):
        raise DataError(f"label {path} is a {im.mode} image; expected a palette or "
                        "greyscale PNG of class indices")
    return np.asarray(im, dtype=np.uint8)
