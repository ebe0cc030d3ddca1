"""SIFT Flow (Liu, Yuen, Torralba): 2,688 outdoor images at 256x256 with 33 semantic
and 3 geometric classes, two heads in the nets; the paper's 200 test images and
every other labelled image for training. data/sift-flow/README.md."""
import numpy as np

from fcn.datasets.base import IGNORE, Dataset, Reader, read_list, write_list
from fcn.downloads import AUTO, RELEASE_RAW, Known, Source
from fcn.errors import DataError
from fcn.images import load_mat, rgb_array

CLASSES = ("awning", "balcony", "bird", "boat", "bridge", "building", "bus", "car",
           "cow", "crosswalk", "desert", "door", "fence", "field", "grass", "moon",
           "mountain", "person", "plant", "pole", "river", "road", "rock", "sand",
           "sea", "sidewalk", "sign", "sky", "staircase", "streetlight", "sun", "tree",
           "window")
GEO_CLASSES = ("sky", "horizontal", "vertical")
SUB = "spatial_envelope_256x256_static_8outdoorcategories"


class SIFTFlowReader(Reader):
    layout = (f"<dir>/Images/{SUB}/<id>.jpg, <dir>/SemanticLabels/{SUB}/<id>.mat, "
              f"<dir>/GeoLabels/{SUB}/<id>.mat (variable S), <dir>/<split>.txt")

    def split_file(self, split):
        return self.root / f"{split}.txt"

    def path(self, id_, top):
        if top == "data":
            return self.root / "Images" / SUB / f"{id_}.jpg"
        folder = {"sem": "SemanticLabels", "geo": "GeoLabels"}[top]
        return self.root / folder / SUB / f"{id_}.mat"

    def raw(self, id_, top):
        if top == "data":
            return rgb_array(self.path(id_, top))
        s = np.asarray(load_mat(self.path(id_, top), "S")).astype(np.int64)
        # classes are 1-based; 0 (and -1 for geometry) is unlabeled -> ignore
        return np.where(s >= 1, s - 1, IGNORE).astype(np.uint8)


def derive(root):
    """test = the paper's 200 test images; trainval = every other image with both
    label files (two images have none)."""
    d = root / DATASET.dir
    test = read_list(d / "release-test.txt", "SIFT Flow test list")
    images = sorted(p.stem for p in (d / "Images" / SUB).glob("*.jpg"))
    if not images:
        raise DataError(f"no SIFT Flow images in {d / 'Images' / SUB}")
    labelled = [i for i in images if (d / "SemanticLabels" / SUB / f"{i}.mat").is_file()
                and (d / "GeoLabels" / SUB / f"{i}.mat").is_file()]
    missing = sorted(set(test) - set(labelled))
    if missing:
        raise DataError(f"SIFT Flow test images without image or labels: "
                        f"{', '.join(missing[:5])}")
    test_set = set(test)
    write_list(d / "test.txt", test, DATASET, "test")
    write_list(d / "trainval.txt", [i for i in labelled if i not in test_set], DATASET,
               "trainval")


DATASET = Dataset(
    "siftflow", "SIFTFlowSegDataLayer", "sift-flow", {"trainval": 2486, "test": 200},
    ("trainval", "test"), SIFTFlowReader, {"sem": CLASSES, "geo": GEO_CLASSES},
    (114.578, 115.294, 108.353), (256, 256),
    sources=(
        Source("http://www.cs.unc.edu/~jtighe/Papers/ECCV10/siftflow/SiftFlowDataset.zip",
               "sift-flow", AUTO),
        Source(RELEASE_RAW + "data/sift-flow/test.txt", "sift-flow/release-test.txt",
               archive=False, known=Known(
                   size=3355, sha256="d9d024d06b1ed2139b0e1bdbc78ede9897c3389cd588cd5c37268a931c1d36ae",
                   source="the release's git history"))),
    derive=derive, derived="trainval and test lists")
