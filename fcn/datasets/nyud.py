"""NYUDv2 with Gupta et al.'s 40-class labels, depth and HHA (Gupta, Arbelaez, Malik,
CVPR 2013; Gupta et al., ECCV 2014), in the release's layout: trainval = train + val
(795), test (654). data/nyud/README.md has its sources."""
import numpy as np

from fcn.datasets.base import (IGNORE, Dataset, Reader, read_list, recipe, write_list,
                               write_png)
from fcn.downloads import AUTO, DL, RELEASE_RAW, Known, Source
from fcn.errors import DataError
from fcn.images import index_png, load_mat, preprocess, read_image, rgb_array
from fcn.progress import Progress

CLASSES = ("wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window",
           "bookshelf", "picture", "counter", "blinds", "desk", "shelves", "curtain",
           "dresser", "pillow", "mirror", "floor mat", "clothes", "ceiling", "books",
           "refridgerator", "television", "paper", "towel", "shower curtain", "box",
           "whiteboard", "person", "night stand", "toilet", "sink", "lamp", "bathtub",
           "bag", "otherstructure", "otherfurniture", "otherprop")
MODALITIES = ("color", "depth", "hha", "label")


class NYUDReader(Reader):
    """NYUDv2 in the release's layout, with 40-class label PNGs derived by prepare.py;
    its data layer makes the tops the net reads (param ``tops``)."""
    layout = ("<dir>/data/{images,depth,hha}/img_<id>.png, <dir>/labels40/img_<id>.png "
              "(derived), <dir>/<split>.txt")

    def split_file(self, split):
        return self.root / f"{split}.txt"

    def tops(self):
        tops = self.params.get("tops", ["color", "label"])
        bad = [t for t in tops if t not in MODALITIES]
        if bad or not tops:
            raise DataError(f"NYUDv2 tops must be chosen from {', '.join(MODALITIES)}; "
                            f"got {tops}")
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

    def recipe(self, top):
        if top == "depth":
            return recipe("depth", "a depth map in millimetres (H x W; the dataset's 16-bit "
                          "PNGs)", (0,), (self.info.extra["depth_mean"],), "", log_min=1.0)
        if top == "hha":
            return recipe("hha", "an HHA image (H x W x 3, channels as stored)", (0, 1, 2),
                          self.info.extra["hha_mean"], "as stored, not flipped")
        return super().recipe(top)


def derive(root):
    """trainval = train + val; 40-class label PNGs from segmentation/img_<id>.mat
    (0 = unlabeled -> 255, classes 1..40 -> 0..39)."""
    d = root / DATASET.dir
    splits = {s: read_list(d / f"{s}.txt", f"NYUDv2 {s} list") for s in ("train", "val", "test")}
    write_list(d / "trainval.txt", splits["train"] + splits["val"], DATASET, "trainval")
    ids = splits["train"] + splits["val"] + splits["test"]
    bar = Progress(len(ids), label="  labels40", unit="files")
    for i in ids:
        out = d / "labels40" / f"img_{i}.png"
        if not out.exists():
            seg = np.asarray(load_mat(d / "segmentation" / f"img_{i}.mat", "segmentation"))
            write_png(out, np.where(seg >= 1, seg - 1, IGNORE))
        bar.update(1)
    bar.close()


def layer_params(modality, labels):
    """The tops of a net's data layer: its inputs (colour and depth for early fusion,
    colour and HHA for late fusion), then its labels."""
    tops = {"color-d": ["color", "depth"], "color-hha": ["color", "hha"]}.get(
        modality, [modality])
    return {"tops": tops + list(labels)}


LISTS = (("train", 1904, "8db94b4a9b33494c20319c6e79073aa7b842a683e6d263c3873d6ee95cebf759"),
         ("val", 2070, "cd278b1232fe5c2347994a9a3c13cd916aa2e72def51b9698993a2e8936797f5"),
         ("test", 3269, "f717536bdff71424f6f7cd0674cf6ac4381b2cffaaf942230b962a9f40671e7a"))

DATASET = Dataset(
    "nyud", "NYUDSegDataLayer", "nyud", {"train": 381, "val": 414, "trainval": 795, "test": 654},
    ("trainval", "test"), NYUDReader, {"label": CLASSES}, (116.190, 97.203, 92.318), (425, 560),
    sources=(Source(DL + "nyud.tar.gz", "nyud", AUTO),) + tuple(
        Source(RELEASE_RAW + f"data/nyud/{s}.txt", f"nyud/{s}.txt", archive=False,
               known=Known(size=size, sha256=sha, source="the release's git history"))
        for s, size, sha in LISTS),
    derive=derive, derived="trainval and 40-class label PNGs",
    param_keys=("tops",), layer_params=layer_params, check_params={"tops": list(MODALITIES)},
    extra={"hha_mean": (132.431, 94.076, 118.477), "depth_mean": 7.844})
