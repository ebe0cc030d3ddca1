"""PASCAL-Context (Mottaghi et al., CVPR 2014): whole-scene labels of the VOC2010
images; the task keeps the 59 most frequent classes, everything else is background.
Images under pascal/VOC2010, labels under pascal-context (the layer param
``context_dir``). data/pascal-context/README.md."""
from pathlib import Path

import numpy as np

from fcn.datasets.base import Dataset, Reader, read_list, write_list, write_png
from fcn.datasets.pascal import PASCAL_MEAN, VOC_CLASSES
from fcn.downloads import Known, Source
from fcn.errors import DataError
from fcn.images import load_mat
from fcn.progress import Progress

CLASSES = VOC_CLASSES + (
    "bag", "bed", "bench", "book", "building", "cabinet", "ceiling", "clothes", "computer",
    "cup", "door", "fence", "floor", "flower", "food", "grass", "ground", "keyboard", "light",
    "mountain", "mouse", "curtain", "platform", "sign", "plate", "road", "rock", "shelves",
    "sidewalk", "sky", "snow", "bedcloth", "track", "tree", "truck", "wall", "water", "window",
    "wood")
CONTEXT_DIR = "pascal-context"
# The 59-class list spells three classes otherwise than the full list.
RENAMES = {"diningtable": "table", "bedcloth": "bedclothes", "clothes": "cloth"}
VOC2010 = "http://host.robots.ox.ac.uk/pascal/VOC/voc2010/VOCtrainval_03-May-2010.tar"
CONTEXT = "https://cs.stanford.edu/~roozbeh/pascal-context/"


class PASCALContextReader(Reader):
    """VOC2010 images with 59-class (+ background) label PNGs derived by prepare.py."""
    layout = ("<dir>/JPEGImages/<id>.jpg (VOC2010), <context_dir>/labels59/<id>.png "
              "(derived), <context_dir>/<split>.txt")

    @property
    def context_dir(self):
        c = Path(self.params.get("context_dir", CONTEXT_DIR))
        return c if c.is_absolute() else Path(self.params["data_root"]) / c

    def split_file(self, split):
        return self.context_dir / f"{split}.txt"

    def path(self, id_, top):
        if top == "label":
            return self.context_dir / "labels59" / f"{id_}.png"
        return self.root / "JPEGImages" / f"{id_}.jpg"


def context_names(path):
    """'<index>: <name>' lines -> names in index order (spaces dropped, as the release)."""
    names = []
    for line in read_list(path, "PASCAL-Context label list"):
        idx, _, name = line.partition(":")
        if not name:
            raise DataError(f"{path}: line {line!r} is not '<index>: <name>'")
        names.append(name.strip().replace(" ", ""))
    return names


def derive(root):
    """train/val = VOC2010 Main train/val; labels59/<id>.png = the full labels mapped to
    the 59-class task (0 = background and everything else)."""
    voc, ctx = root / DATASET.dir, root / CONTEXT_DIR
    full = context_names(ctx / "labels.txt")
    task = [RENAMES.get(n, n) for n in context_names(ctx / "59_labels.txt")
            if n != "background"]                    # background is class 0 by construction
    if len(task) != 59:
        raise DataError(f"{ctx / '59_labels.txt'} lists {len(task)} classes, expected 59")
    unknown = [n for n in task if n not in full]
    if unknown:
        raise DataError(f"59-class names not in the full label list: {', '.join(unknown)}")
    lut = np.zeros(len(full) + 1, np.uint8)          # full index (1-based) -> task index
    for k, name in enumerate(task):
        lut[full.index(name) + 1] = k + 1
    for split in ("train", "val"):
        ids = read_list(voc / "ImageSets/Main" / f"{split}.txt", f"VOC2010 {split} list")
        write_list(ctx / f"{split}.txt", ids, DATASET, split)
        bar = Progress(len(ids), label=f"  labels59 ({split})", unit="files")
        for i in ids:
            out = ctx / "labels59" / f"{i}.png"
            if not out.exists():
                m = np.asarray(load_mat(ctx / "trainval" / f"{i}.mat", "LabelMap"))
                if m.max(initial=0) > len(full):
                    raise DataError(f"{ctx / 'trainval' / f'{i}.mat'}: label {m.max()} beyond "
                                    f"the {len(full)} names of labels.txt")
                write_png(out, lut[m])
            bar.update(1)
        bar.close()


DATASET = Dataset(
    "pascalcontext", "PASCALContextSegDataLayer", "pascal/VOC2010", {"train": 4998, "val": 5105},
    ("train", "val"), PASCALContextReader, {"label": CLASSES}, PASCAL_MEAN,
    sources=(
        Source(VOC2010, "pascal/VOC2010", "VOCdevkit/VOC2010/", known=Known(
            md5="da459979d0c395079b5c75ee67908abb", sha1="bf9985e9f2b064752bf6bd654d89f017c76c395a",
            source="md5: torchvision datasets/voc.py; sha1: skdata pascal.py")),
        Source(CONTEXT + "trainval.tar.gz", CONTEXT_DIR, known=Known(
            md5="df034edb2c12aa7d33b42b20bb1796e3", source="keras-contrib datasets/pascal_voc.py")),
        Source(CONTEXT + "59_labels.txt", f"{CONTEXT_DIR}/59_labels.txt", archive=False,
               known=Known(md5="993901f2d930cc038c406845f08fa082",
                           source="keras-contrib datasets/pascal_voc.py"))),
    derive=derive, derived="train/val lists and 59-class label PNGs",
    param_keys=("context_dir",), layer_params=lambda modality, labels: {"context_dir": CONTEXT_DIR},
    extra={"context_dir": CONTEXT_DIR})
