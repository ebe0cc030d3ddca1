"""SBD, the Semantic Boundaries Dataset (Hariharan et al., ICCV 2011): extra
segmentation annotations of PASCAL VOC 2011 images. The VOC models train on its
8,498 train images. data/sbdd/README.md has its sources."""
import numpy as np

from fcn.datasets.base import Dataset, Reader
from fcn.datasets.pascal import PASCAL_MEAN, VOC_CLASSES
from fcn.downloads import Known, Source
from fcn.errors import DataError
from fcn.images import load_mat, rgb_array

URL = ("https://www2.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/"
       "semantic_contours/benchmark.tgz")


class SBDDReader(Reader):
    layout = "<dir>/img/<id>.jpg, <dir>/cls/<id>.mat (GTcls.Segmentation), <dir>/<split>.txt"

    def split_file(self, split):
        return self.root / f"{split}.txt"

    def path(self, id_, top):
        return self.root / "cls" / f"{id_}.mat" if top == "label" else \
            self.root / "img" / f"{id_}.jpg"

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


DATASET = Dataset(
    "sbdd", "SBDDSegDataLayer", "sbdd/dataset", {"train": 8498, "val": 2857}, ("train",),
    SBDDReader, {"label": VOC_CLASSES}, PASCAL_MEAN,
    sources=(Source(URL, "sbdd", "benchmark_RELEASE/", known=Known(
        size=1419539633, md5="82b4d87ceb2ed10f6038a1cba92111cb",
        sha1="7129e0a480c2d6afb02b517bb18ac54283bfaa35",
        source="md5: torchvision datasets/sbd.py; sha1: gluon-cv "
               "scripts/datasets/pascal_voc.py; size: a download log of torchvision's "
               "SBDataset (super-gradients' documentation)")),))
