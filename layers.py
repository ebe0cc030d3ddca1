"""The Python data layers of the zoo's nets (their prototxts name module "layers"):
one per dataset, each reading one whole image (and its labels) per batch through
its dataset's reader (fcn/datasets/), as the release's data layers do.

``param_str`` is JSON: ``dir`` (the dataset folder, relative to the data root or
absolute) and ``split`` are required; ``seed`` (default 1337), ``shuffle`` (default:
true in TRAIN, false in TEST) and ``data_root`` are optional, plus ``tops`` for
NYUDv2 and ``context_dir`` for PASCAL-Context. The data root is ``data_root``, else
the rule of fcn.datasets.data_root ($FCN_DATA, else the repo's data/ or the shared
data beside the repo, whichever holds the split).
"""
import caffe
import numpy as np

from fcn import datasets
from fcn.errors import DataError


class SegDataLayer(caffe.Layer):
    """Base of the data layers: whole images, batch 1, one top per reader top, the
    split walked in a shuffled order of its own seeded generator in TRAIN (in file
    order otherwise), the tops reshaped to each image."""
    dataset = None

    def setup(self, bottom, top):
        name = type(self).__name__
        self.params = datasets.parse_params(self.param_str, self.dataset, name)
        self.reader = datasets.reader_for(self.dataset, self.params)
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
        self.last_id = self.current_id      # the example the tops hold (scoring names files by it)
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


class VOCSegDataLayer(SegDataLayer):
    """PASCAL VOC 2011: JPEGImages/<id>.jpg, SegmentationClass/<id>.png (palette)."""
    dataset = "voc"


class SBDDSegDataLayer(SegDataLayer):
    """SBD: img/<id>.jpg, cls/<id>.mat (GTcls.Segmentation)."""
    dataset = "sbdd"


class NYUDSegDataLayer(SegDataLayer):
    """NYUDv2: the tops of ``tops`` (color, depth, hha, label), 40 classes."""
    dataset = "nyud"


class SIFTFlowSegDataLayer(SegDataLayer):
    """SIFT Flow: data, sem (33 classes), geo (3 classes)."""
    dataset = "siftflow"


class PASCALContextSegDataLayer(SegDataLayer):
    """PASCAL-Context: VOC2010 images, labels59/<id>.png under ``context_dir``."""
    dataset = "pascalcontext"


class CamVidSegDataLayer(SegDataLayer):
    """CamVid (SegNet's split): <split>/<name>.png, <split>annot/<name>.png."""
    dataset = "camvid"
