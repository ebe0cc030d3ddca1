"""Python data layers for every dataset of the zoo, and the readers behind them.

A *reader* knows one dataset's layout on disk: its split lists, where each image
and label lives and how to decode them. It is plain Python (the check command in
prepare.py uses it without Caffe). A *data layer* (``<Dataset>SegDataLayer``) wraps
a reader for Caffe: it parses its JSON ``param_str``, walks the split (shuffled
with its own seeded RNG in the TRAIN phase, in file order otherwise) and emits
one whole image per batch, reshaping its tops to each image.

``param_str`` keys (JSON): ``dir`` (dataset folder, relative to the data root or
absolute) and ``split`` are required; ``seed`` (default 1337), ``shuffle``
(default: true in TRAIN, false in TEST) and ``data_root`` are optional, plus
``tops`` for NYUDv2 and ``context_dir`` for PASCAL-Context. The data root is
``data_root``, else the rule of ``data_root()`` ($FCN_DATA, else the repo's ``data/``
or the shared data beside the repo, whichever holds the split).
"""
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

import cli
from datasets import DATASETS, head_classes
from errors import FcnError

REPO = Path(__file__).resolve().parent
IGNORE = 255


class DataError(FcnError):
    """A problem with a dataset on disk or a layer's parameters; one line, naming the file."""


# ---------------------------------------------------------------------------
# Preprocessing: one definition, used by the layers and by infer.py.


def preprocess(rgb, mean_bgr):
    """HxWx3 RGB image (any numeric dtype) -> 3xHxW float32 BGR minus the mean."""
    x = np.asarray(rgb, dtype=np.float32)[:, :, ::-1]
    x = x - np.asarray(mean_bgr, dtype=np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


SHARED_DATA = REPO.parent / "shared" / "data"
# What a data root must hold besides the datasets' split lists: the compressed
# ImageNet SqueezeNet of the CPU-scale method (squeezenet.py decodes it).
SQUEEZENET_FILE = "squeezenet/compressed_SqueezeNet.net"


def holds(root, needs):
    """True when ``root`` has the files of everything in ``needs``: (dataset, split)
    pairs (the split's list is there) and "squeezenet" (the compressed file). A
    folder named like a dataset is not enough: data/camvid/ holds a README only."""
    root = Path(root)
    for need in needs:
        if need == "squeezenet":
            if not (root / SQUEEZENET_FILE).is_file():
                return False
            continue
        dataset, split = need
        reader = READERS[dataset](root / DATASETS[dataset].dir,
                                  {"data_root": str(root)})
        if not reader.split_file(split).is_file():
            return False
    return True


def data_root(explicit=None, needs=()):
    """The folder dataset paths are relative to, decided here and nowhere else:
    ``explicit`` (a command's --data-root, or a data layer's ``data_root`` param),
    else $FCN_DATA, else the repo's data/ when it holds what the caller ``needs``
    (see holds), else the shared data beside the repo (../shared/data: CamVid and
    SqueezeNet for the CPU-scale method) when that holds it, else data/. A relative
    path is relative to the working directory, as on every command line. Commands
    resolve it once and pass it on in the data layers' ``param_str``, never
    through the process environment."""
    if explicit:
        return Path(explicit).expanduser().resolve()
    env = cli.env_path("FCN_DATA")
    if env is not None:
        return env
    default = REPO / "data"
    needs = list(needs)
    if needs and not holds(default, needs) and holds(SHARED_DATA, needs):
        return SHARED_DATA
    return default


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


def header_size(path):
    """(width, height) from a PNG, BMP or PNM header, for files Pillow refuses to open
    (it refuses images with no pixels); None if it is none of those."""
    import struct
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
    import scipy.io
    try:
        mat = scipy.io.loadmat(str(path), squeeze_me=True, struct_as_record=False)
    except FileNotFoundError:
        raise DataError(f"missing {what}: {path}") from None
    except Exception as e:  # scipy raises a zoo of types for broken files
        raise DataError(f"unreadable {what} {path}: {e}") from None
    if key not in mat:
        raise DataError(f"{path} has no '{key}' variable (has: {', '.join(k for k in mat if not k.startswith('__'))})")
    return mat[key]


def rgb_array(path):
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


# ---------------------------------------------------------------------------
# Readers


def check_id(id_, list_file, line):
    """Ids become parts of file paths: refuse one that could leave the dataset folder."""
    parts = id_.replace("\\", "/").split("/")
    if id_.startswith("/") or ".." in parts or "\0" in id_:
        raise DataError(f"split list {list_file} line {line}: id {id_!r} points outside the "
                        "dataset folder; ids name files inside it")


class Reader:
    """One dataset's layout. Subclasses set ``dataset`` (a key of datasets.DATASETS),
    ``layout`` (for error messages) and implement ``split_file`` and ``path(id,
    top)`` (the file holding that top), and ``tops`` and ``raw(id, top)`` (the
    decoded array: HxWxC image or HxW label with IGNORE for void) where they differ
    from the common image + index-PNG label; ``load`` gives the array a net reads."""
    dataset = None
    layout = ""
    label_tops = ("label",)

    @property
    def label_classes(self):
        """Label top -> number of classes (from datasets.py)."""
        return {t: len(head_classes(self.dataset, t)) for t in self.label_tops}

    def __init__(self, root, params=None):
        self.root = Path(root)
        self.params = params or {}
        self.info = DATASETS[self.dataset]

    # -- what subclasses provide
    def split_file(self, split):
        raise NotImplementedError

    def tops(self):
        return ["data", "label"]

    def path(self, id_, top):
        raise NotImplementedError

    def raw(self, id_, top):
        """The common case: an index PNG label, an RGB image."""
        path = self.path(id_, top)
        return index_png(path) if top == "label" else rgb_array(path)

    # -- shared
    def ids(self, split):
        if not self.root.is_dir():
            raise DataError(f"{self.info.name} folder not found: {self.root}; expected "
                            f"{self.layout} (see data/README.md: python prepare.py get "
                            f"{self.info.name})")
        f = self.split_file(split)
        if not f.is_file():
            raise DataError(f"split list not found: {f}; expected {self.layout}")
        ids = [self.parse_line(l, split) for l in f.read_text().splitlines() if l.strip()]
        for n, id_ in enumerate(ids, 1):
            check_id(id_, f, n)
        if not ids:
            raise DataError(f"split list {f} is empty")
        return ids

    def parse_line(self, line, split):
        return line.strip()

    def load(self, id_, top):
        a = self.raw(id_, top)
        if top in self.label_classes:
            return a[np.newaxis].astype(np.float32)
        return self.to_input(a, top)

    def to_input(self, a, top):
        return preprocess(a, self.info.mean)

    def sample(self, id_, tops=None):
        """Every top of one example, checked: same height/width, labels in range."""
        tops = tops or self.tops()
        out = {t: self.load(id_, t) for t in tops}
        sizes = {t: a.shape[-2:] for t, a in out.items()}
        if len(set(sizes.values())) > 1:
            raise DataError(f"{self.info.name} {id_}: sizes differ ("
                            + ", ".join(f"{self.path(id_, t)} {h}x{w}"
                                        for t, (h, w) in sizes.items()) + ")")
        for t, a in out.items():
            if t in self.label_classes:
                check_label(a, self.label_classes[t], self.path(id_, t))
        return out


def check_label(a, num_classes, where):
    vals = np.unique(a)
    bad = vals[(vals >= num_classes) & (vals != IGNORE)]
    if bad.size:
        raise DataError(f"label {where} has values {', '.join(str(int(v)) for v in bad[:5])} "
                        f"outside 0..{num_classes - 1} and {IGNORE} (ignore)")


class VOCReader(Reader):
    dataset = "voc"
    layout = ("<dir>/JPEGImages/<id>.jpg, <dir>/SegmentationClass/<id>.png (palette), "
              "<dir>/ImageSets/Segmentation/<split>.txt")

    def split_file(self, split):
        return self.root / "ImageSets" / "Segmentation" / f"{split}.txt"

    def path(self, id_, top):
        if top == "label":
            return self.root / "SegmentationClass" / f"{id_}.png"
        return self.root / "JPEGImages" / f"{id_}.jpg"


class SBDDReader(Reader):
    dataset = "sbdd"
    layout = "<dir>/img/<id>.jpg, <dir>/cls/<id>.mat (GTcls.Segmentation), <dir>/<split>.txt"

    def split_file(self, split):
        return self.root / f"{split}.txt"

    def path(self, id_, top):
        return self.root / "cls" / f"{id_}.mat" if top == "label" else self.root / "img" / f"{id_}.jpg"

    def raw(self, id_, top):
        path = self.path(id_, top)
        if top == "label":
            gt = load_mat(path, "GTcls")
            try:
                seg = gt.Segmentation
            except AttributeError:
                raise DataError(f"{path}: GTcls has no Segmentation field") from None
            return np.asarray(seg, dtype=np.uint8)
        return rgb_array(path)


class NYUDReader(Reader):
    """NYUDv2 in the release's layout, with 40-class label PNGs derived by prepare.py."""
    dataset = "nyud"
    layout = ("<dir>/data/{images,depth,hha}/img_<id>.png, <dir>/labels40/img_<id>.png "
              "(derived), <dir>/<split>.txt")
    MODALITIES = ("color", "depth", "hha", "label")

    def split_file(self, split):
        return self.root / f"{split}.txt"

    def tops(self):
        tops = self.params.get("tops", ["color", "label"])
        bad = [t for t in tops if t not in self.MODALITIES]
        if bad or not tops:
            raise DataError(f"NYUDv2 tops must be chosen from {', '.join(self.MODALITIES)}; got {tops}")
        return list(tops)

    def path(self, id_, top):
        folder = {"color": "data/images", "depth": "data/depth", "hha": "data/hha",
                  "label": "labels40"}[top]
        return self.root / folder / f"img_{id_}.png"

    def raw(self, id_, top):
        if top == "label":
            return index_png(self.path(id_, top))
        if top == "depth":
            return np.asarray(read_image(self.path(id_, top), "depth"), dtype=np.float32)
        if top == "hha":
            return np.asarray(read_image(self.path(id_, top), "HHA").convert("RGB"))
        return rgb_array(self.path(id_, top))

    def to_input(self, a, top):
        if top == "depth":
            # log depth, as in the release; zeros (missing depth) would give -inf
            return (np.log(np.maximum(a, 1.0)) - self.info.extra["depth_mean"])[np.newaxis]
        if top == "hha":
            # HHA is stored as (H, H, A) channels and used in that order, not flipped.
            x = np.asarray(a, np.float32) - np.asarray(self.info.extra["hha_mean"], np.float32)
            return np.ascontiguousarray(x.transpose(2, 0, 1))
        return preprocess(a, self.info.mean)


class SIFTFlowReader(Reader):
    dataset = "siftflow"
    SUB = "spatial_envelope_256x256_static_8outdoorcategories"
    layout = (f"<dir>/Images/{SUB}/<id>.jpg, <dir>/SemanticLabels/{SUB}/<id>.mat, "
              f"<dir>/GeoLabels/{SUB}/<id>.mat (variable S), <dir>/<split>.txt")
    label_tops = ("sem", "geo")

    def split_file(self, split):
        return self.root / f"{split}.txt"

    def tops(self):
        return ["data", "sem", "geo"]

    def path(self, id_, top):
        if top == "data":
            return self.root / "Images" / self.SUB / f"{id_}.jpg"
        folder = {"sem": "SemanticLabels", "geo": "GeoLabels"}[top]
        return self.root / folder / self.SUB / f"{id_}.mat"

    def raw(self, id_, top):
        if top == "data":
            return rgb_array(self.path(id_, top))
        s = np.asarray(load_mat(self.path(id_, top), "S")).astype(np.int64)
        # classes are 1-based; 0 (and -1 for geometry) is unlabeled -> ignore
        return np.where(s >= 1, s - 1, IGNORE).astype(np.uint8)


class PASCALContextReader(Reader):
    """VOC2010 images with 59-class (+ background) label PNGs derived by prepare.py."""
    dataset = "pascalcontext"
    layout = ("<dir>/JPEGImages/<id>.jpg (VOC2010), <context_dir>/labels59/<id>.png "
              "(derived), <context_dir>/<split>.txt")

    @property
    def context_dir(self):
        c = Path(self.params.get("context_dir", self.info.extra["context_dir"]))
        return c if c.is_absolute() else Path(self.params.get("data_root") or data_root()) / c

    def split_file(self, split):
        return self.context_dir / f"{split}.txt"

    def path(self, id_, top):
        if top == "label":
            return self.context_dir / "labels59" / f"{id_}.png"
        return self.root / "JPEGImages" / f"{id_}.jpg"


class CamVidReader(Reader):
    """CamVid as split for SegNet: <split>.txt lists "<any path>/<split>/X.png
    <any path>/<split>annot/X.png"; only the file names are used, and an example's
    id is "<split>/X.png"."""
    dataset = "camvid"
    layout = "<dir>/<split>.txt, <dir>/<split>/<name>.png, <dir>/<split>annot/<name>.png"
    VOID = 11

    def split_file(self, split):
        return self.root / f"{split}.txt"

    def parse_line(self, line, split):
        return f"{split}/{Path(line.split()[0]).name}"

    def path(self, id_, top):
        split, name = id_.split("/")
        return self.root / (f"{split}annot" if top == "label" else split) / name

    def raw(self, id_, top):
        if top == "label":
            a = index_png(self.path(id_, top))
            return np.where(a == self.VOID, IGNORE, a).astype(np.uint8)
        return rgb_array(self.path(id_, top))


READERS = {r.dataset: r for r in (VOCReader, SBDDReader, NYUDReader, SIFTFlowReader,
                                  PASCALContextReader, CamVidReader)}


# ---------------------------------------------------------------------------
# Parameters


COMMON_REQUIRED = {"dir", "split"}
COMMON_OPTIONAL = {"seed", "shuffle", "data_root"}
EXTRA_OPTIONAL = {"nyud": {"tops"}, "pascalcontext": {"context_dir"}}


def parse_params(param_str, dataset, layer_name="data layer"):
    """JSON param_str -> dict, with the keys checked; one-line DataError otherwise."""
    try:
        params = json.loads(param_str or "{}")
    except json.JSONDecodeError as e:
        raise DataError(f"{layer_name}: param_str is not JSON ({e.msg} at column {e.colno}): "
                        f"{param_str!r}") from None
    if not isinstance(params, dict):
        raise DataError(f"{layer_name}: param_str must be a JSON object, got {param_str!r}")
    allowed = COMMON_REQUIRED | COMMON_OPTIONAL | EXTRA_OPTIONAL.get(dataset, set())
    missing = sorted(COMMON_REQUIRED - params.keys())
    unknown = sorted(params.keys() - allowed)
    if missing:
        raise DataError(f"{layer_name}: param_str lacks {', '.join(missing)} "
                        f"(required: {', '.join(sorted(COMMON_REQUIRED))})")
    if unknown:
        raise DataError(f"{layer_name}: unknown param_str keys {', '.join(unknown)} "
                        f"(allowed: {', '.join(sorted(allowed))})")
    if "seed" in params and not isinstance(params["seed"], int):
        raise DataError(f"{layer_name}: seed must be an integer, got {params['seed']!r}")
    return params


def reader_for(dataset, params):
    """The reader a data layer's params name; the data root (data_root) is decided
    once here and kept in the params for the paths that hang off it."""
    params = dict(params, data_root=str(data_root(params.get("data_root"),
                                                  [(dataset, params["split"])])))
    d = Path(params["dir"])
    return READERS[dataset](d if d.is_absolute() else Path(params["data_root"]) / d, params)


# ---------------------------------------------------------------------------
# Caffe layers

try:
    import caffe
    _LayerBase = caffe.Layer
except ImportError:  # readers stay usable without Caffe
    caffe = None
    _LayerBase = object


class SegDataLayer(_LayerBase):
    """Base of the data layers: whole images, batch 1, one top per reader top."""
    dataset = None

    def setup(self, bottom, top):
        name = type(self).__name__
        self.params = parse_params(self.param_str, self.dataset, name)
        self.reader = reader_for(self.dataset, self.params)
        self.top_names = self.reader.tops()
        if len(bottom) != 0:
            raise DataError(f"{name} takes no bottoms")
        if len(top) != len(self.top_names):
            raise DataError(f"{name} needs {len(self.top_names)} tops "
                            f"({', '.join(self.top_names)}), the net defines {len(top)}")
        self.split = self.params["split"]
        self.ids = self.reader.ids(self.split)
        self.shuffle = bool(self.params.get("shuffle", self.phase == caffe.TRAIN))
        self.rng = np.random.default_rng(self.params.get("seed", 1337))
        self.pos = 0
        self.order = self._order()

    def _order(self):
        n = len(self.ids)
        return self.rng.permutation(n) if self.shuffle else np.arange(n)

    @property
    def current_id(self):
        return self.ids[self.order[self.pos]]

    def reshape(self, bottom, top):
        self.last_id = self.current_id           # the example the tops hold (scoring names files by it)
        sample = self.reader.sample(self.last_id, self.top_names)
        self.blobs_now = [sample[t] for t in self.top_names]
        for i, a in enumerate(self.blobs_now):      # (top is not iterable from Python)
            top[i].reshape(1, *a.shape)

    def forward(self, bottom, top):
        for i, a in enumerate(self.blobs_now):
            top[i].data[...] = a
        self.pos += 1
        if self.pos == len(self.ids):
            self.pos = 0
            self.order = self._order()

    def backward(self, top, propagate_down, bottom):
        pass


# One data layer class per dataset, named as datasets.py records it (the name the
# nets' prototxts give Caffe): VOCSegDataLayer, SBDDSegDataLayer, NYUDSegDataLayer,
# SIFTFlowSegDataLayer, PASCALContextSegDataLayer, CamVidSegDataLayer.
for _d in DATASETS.values():
    globals()[_d.layer] = type(_d.layer, (SegDataLayer,), {
        "dataset": _d.name, "__module__": __name__,
        "__doc__": f"{_d.name}: {READERS[_d.name].layout}"})
del _d
