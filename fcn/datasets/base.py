"""What every dataset module is made of: its facts (Dataset), the reader of its
layout on disk (a Reader subclass), where it is downloaded from (downloads.Source)
and what prepare.py derives from the download. A dataset module fills one Dataset
record; fcn/datasets/__init__.py lists the modules.

A *reader* knows one dataset's layout: its split lists, where each image and label
lives and how to decode them. It is plain Python (prepare.py check uses it without
Caffe); the data layers of layers.py wrap it for Caffe.
"""
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple

import numpy as np
from PIL import Image

from fcn import files
from fcn.downloads import Source
from fcn.errors import DataError
from fcn.images import index_png, preprocess, rgb_array
from fcn.progress import say

IGNORE = 255          # the label of pixels no class is scored on


@dataclass(frozen=True)
class Dataset:
    """Everything about one dataset, in one record."""
    name: str                            # prepare.py's name for it
    layer: str                           # its data layer's class name in layers.py
    dir: str                             # its folder, relative to the data root
    splits: Dict[str, int]               # split name -> number of images (the paper's)
    used: Tuple[str, ...]                # the splits the zoo trains and scores on
    reader: type                         # its Reader subclass
    heads: Dict[str, Tuple[str, ...]]    # label top -> class names, in output order
    mean: Optional[Tuple[float, ...]] = None   # BGR mean subtracted from images
    size: Tuple[int, int] = (375, 500)   # a typical image (H, W): timing estimates
    sources: Tuple[Source, ...] = ()     # what prepare.py get downloads, with its records
    derive: Optional[Callable] = None    # derive(root): what the models read, from that
    derived: str = ""                    # what derive makes, in a few words
    param_keys: Tuple[str, ...] = ()     # data layer params of its own (beyond dir, split...)
    layer_params: Callable = lambda modality, labels: {}   # their values for a net
    check_params: Dict[str, object] = field(default_factory=dict)  # params for prepare check
    extra: Dict[str, object] = field(default_factory=dict)         # further facts
    needs: Tuple[str, ...] = ()          # datasets its derive reads (made before it)

    @property
    def classes(self):
        """The first head's classes (every dataset but SIFT Flow has one head)."""
        return next(iter(self.heads.values()))

    def input_recipes(self, modality, inputs):
        """{net input: its recipe (Reader.recipe)} for a net of ``modality`` whose Input
        blobs are ``inputs``: the data layer's tops feed them, in that order."""
        reader = self.reader(self, Path(self.dir))
        tops = self.layer_params(modality, ()).get("tops") or reader.tops()
        return {i: reader.recipe(t) for i, t in zip(inputs, tops)}

    def open(self, root, params=None):
        """Its reader over the dataset folder under ``root`` (``params`` as a data
        layer's: ``dir`` absolute or relative to ``data_root``)."""
        params = dict(params or {})
        params.setdefault("data_root", str(root))
        d = Path(params.get("dir", self.dir))
        return self.reader(self, d if d.is_absolute() else Path(params["data_root"]) / d,
                           params)


def recipe(kind, reads, channels, mean, note, log_min=None):
    """How a port makes a net input from a raw array, as data (the ONNX metadata, the
    kit and docs/ports.md give it): ``reads``, the raw array (H x W x K, or H x W for
    one channel), as float32; its channels ``channels`` in that order (``note`` says
    what that does); the natural log of max(x, ``log_min``) when set; minus ``mean``
    (one value per channel); H x W x C -> 1 x C x H x W. ``steps`` says it in words."""
    mean = [float(m) for m in mean]
    steps = [f"{reads}: float32"]
    if len(channels) > 1:
        steps.append(f"channels ({', '.join(map(str, channels))}) ({note})")
    if log_min is not None:
        steps.append(f"natural log of max(x, {log_min:g})")
    steps.append(f"minus ({', '.join(map(repr, mean))})")
    steps.append("H x W x C -> 1 x C x H x W" if len(channels) > 1 else "H x W -> 1 x 1 x H x W")
    return {"kind": kind, "reads": reads, "channels": list(channels), "log_min": log_min,
            "mean": mean, "layout": "1 x C x H x W, float32", "steps": ", ".join(steps)}


def check_id(id_, list_file, line):
    """Ids become parts of file paths: refuse one that could leave the dataset folder."""
    parts = id_.replace("\\", "/").split("/")
    if id_.startswith("/") or ".." in parts or "\0" in id_:
        raise DataError(f"split list {list_file} line {line}: id {id_!r} points outside the "
                        "dataset folder; ids name files inside it")


def check_label(a, num_classes, where):
    outside = (a >= num_classes) & (a != IGNORE)     # (np.unique of every label: 2 ms)
    bad = np.unique(a[outside]) if outside.any() else outside[:0]
    if bad.size:
        raise DataError(f"label {where} has values {', '.join(str(int(v)) for v in bad[:5])} "
                        f"outside 0..{num_classes - 1} and {IGNORE} (ignore)")


class Reader:
    """One dataset's layout. Subclasses set ``layout`` (for error messages) and
    implement ``split_file`` and ``path(id, top)`` (the file holding that top), and
    ``tops`` and ``raw(id, top)`` (the decoded array: HxWxC image or HxW label with
    IGNORE for void) where they differ from the common image + index-PNG label, and
    ``to_input`` with its ``recipe`` (the same as data, for ports) for an input that is
    not an RGB image; ``load`` gives the array a net reads."""
    layout = ""

    def __init__(self, info, root, params=None):
        self.info, self.root = info, Path(root)
        self.params = params or {}

    @property
    def label_classes(self):
        """Label top -> number of classes."""
        return {t: len(c) for t, c in self.info.heads.items()}

    # -- what subclasses provide
    def split_file(self, split):
        raise NotImplementedError

    def tops(self):
        return ["data", *self.info.heads]

    def path(self, id_, top):
        raise NotImplementedError

    def raw(self, id_, top):
        """The common case: an index PNG label, an RGB image."""
        path = self.path(id_, top)
        return index_png(path) if top in self.info.heads else rgb_array(path)

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

    def recipe(self, top):
        """What to_input does to ``top``, as data a port follows (recipe above)."""
        return recipe("color", "an RGB image (H x W x 3)", (2, 1, 0), self.info.mean,
                      "RGB -> BGR")

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


# ---------------------------------------------------------------------------
# What the derive steps share


def read_list(path, what):
    if not Path(path).is_file():
        raise DataError(f"{what} not found: {path}")
    return [l.strip() for l in Path(path).read_text().splitlines() if l.strip()]


def write_list(path, ids, dataset, split):
    """A split list, atomically; a note when its size is not the paper's."""
    path = Path(path)
    files.write_atomic(path, lambda tmp: tmp.write_text("".join(f"{i}\n" for i in ids)))
    want = dataset.splits.get(split)
    note = "" if want in (None, len(ids)) else f" (the paper's split has {want}; check it)"
    say(f"  wrote {path}: {len(ids)} ids{note}")


def write_png(path, a):
    path.parent.mkdir(parents=True, exist_ok=True)
    files.write_atomic(path, lambda tmp: Image.fromarray(np.asarray(a, np.uint8)).save(tmp))
