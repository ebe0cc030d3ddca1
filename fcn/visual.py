"""What a person looks at: the PASCAL VOC palette, label PNGs, overlays with a
legend, and a one-line description of a segmentation. Numpy and Pillow only; the
images are written atomically and marked as the project's (fcn/files.py)."""

import io

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from PIL.PngImagePlugin import PngInfo

from fcn import files


def palette():
    """The PASCAL VOC colour map (bit-interleaved), for any number of classes up to 256."""
    pal = np.zeros((256, 3), np.uint8)
    for i in range(256):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal[i] = r, g, b
    return pal


# Written into every image the project makes (PNG text "Software", JPEG comment), so
# that a later run can tell its own outputs, which it may replace, from a user's files.
SOFTWARE = "fcn-caffe"


def save_label_png(path, label):
    """Class indices as a palette PNG (VOC colours), written atomically."""
    a = np.ascontiguousarray(label, dtype=np.uint8)
    im = Image.frombytes("P", (a.shape[1], a.shape[0]), a.tobytes())
    im.putpalette(palette().tobytes())
    info = PngInfo()
    info.add_text("Software", SOFTWARE)
    return save_encoded(path, im, "PNG", pnginfo=info)


def save_jpeg(path, rgb, quality=90):
    """An HxWx3 uint8 picture (an overlay) as a JPEG, written atomically."""
    return save_encoded(path, Image.fromarray(rgb), "JPEG", quality=quality,
                        comment=SOFTWARE.encode())


def save_encoded(path, im, fmt, **options):
    """Encode in memory, then write the bytes atomically: Pillow's encoders write to
    the file descriptor themselves and can leave a short file on a full disk without
    an error; a plain write raises (files.NoSpace)."""
    buf = io.BytesIO()
    im.save(buf, format=fmt, **options)
    return files.write_atomic(path, lambda tmp: tmp.write_bytes(buf.getvalue()))


def written_by_us(path):
    """True for an image save_label_png or save_jpeg wrote: a PNG whose "Software"
    text, or a JPEG whose comment, is SOFTWARE, as Pillow reads the image's metadata
    (a file that is not such an image, whatever bytes it holds, is not ours)."""
    try:
        with Image.open(path) as im:
            mark = {"PNG": im.info.get("Software"), "JPEG": im.info.get("comment")}.get(
                im.format)
    except Exception:  # not an image at all: not ours
        return False
    return (mark.decode(errors="replace") if isinstance(mark, bytes) else str(mark)) == SOFTWARE


def overlay(rgb, label, background, classes=None):
    """The image with the class colours blended in (``background`` left as it is) and,
    given the class names, a legend strip below it: a swatch and the name of each
    class present, most pixels first."""
    colours = palette()[label].astype(np.float32)
    blend = 0.5 * rgb.astype(np.float32) + 0.5 * colours
    if background is not None:
        keep = label == background
        blend[keep] = rgb[keep]
    blend = blend.astype(np.uint8)
    if classes is None:
        return blend
    return np.concatenate([blend, legend(label, classes, blend.shape[1], background)])


def legend(label, classes, width, background=None):
    """HxWx3 uint8: rows of (colour swatch, class name) for the classes in ``label``."""
    pal = palette()
    counts = np.bincount(label.ravel(), minlength=len(classes))
    present = [int(i) for i in np.argsort(-counts, kind="stable") if counts[i] and i != background]
    font = ImageFont.load_default()
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    pad, swatch, row = 4, 12, 16
    x, y, places = pad, pad, []
    for i in present:
        item = swatch + 4 + int(measure.textlength(classes[i], font=font)) + 10
        if x + item > width and x > pad:
            x, y = pad, y + row
        places.append((i, x, y))
        x += item
    im = Image.new("RGB", (width, y + row + pad if places else 2 * pad), (255, 255, 255))
    draw = ImageDraw.Draw(im)
    for i, x, y in places:
        draw.rectangle([x, y + 2, x + swatch, y + 2 + swatch], fill=tuple(int(v) for v in pal[i]))
        draw.text((x + swatch + 4, y), classes[i], fill=(0, 0, 0), font=font)
    return np.asarray(im)


def describe(label, classes):
    counts = np.bincount(label.ravel(), minlength=len(classes))
    total = label.size
    order = np.argsort(-counts)
    return ", ".join(f"{classes[i]} {100 * counts[i] / total:.1f}%"
                     for i in order if counts[i] and 100 * counts[i] / total >= 0.1) or "nothing"
