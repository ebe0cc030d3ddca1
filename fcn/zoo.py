"""The model zoo: which net of the paper each model directory holds, how it is
built (fcn/builder.py), trained (its solver, initialisation, iteration count and
scoring interval, as the release's solve.py) and which weights it has; the ILSVRC
classifiers the FCNs are cut from; and the files generated from it for every model
directory (train/val or trainval/test nets with the Python data layer, a deploy net,
a solver, the net.py / solve.py entry points, the released weights' URL), which
`python nets.py` writes and checks. docs/zoo.md lists where and why anything
differs from the release.
"""
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

from caffe.proto import caffe_pb2
from google.protobuf import text_format

from fcn import datasets
from fcn.builder import MODALITIES, BuildError, Data, Head, fcn
from fcn.downloads import DL, Known
from fcn.paths import OUT, REPO


def heads(dataset, *tops):
    """The heads of a model trained on ``dataset``: one per (layer-name suffix, label
    top), the class count taken from fcn/datasets (default: one head, "label")."""
    return tuple(Head(sfx, len(datasets.head_classes(dataset, top)), top)
                 for sfx, top in (tops or (("", "label"),)))




# ---------------------------------------------------------------------------
# The zoo


@dataclass(frozen=True)
class Model:
    name: str
    train: Data
    eval: Data
    files: Tuple[str, str]                   # (train net, eval net) file names
    base_lr: float
    stride: int = 32
    heads: Tuple[Head, ...] = heads("voc")
    backbone: str = "vgg16"
    modality: str = "color"
    atonce: bool = False
    normalize: bool = False
    momentum: float = 0.99
    iter_size: int = 1
    max_iter: int = 100000
    snapshot: Optional[int] = 4000
    caffemodel_url: Optional[str] = None
    weights_known: Known = Known()           # the released weights' size/checksums on record
    # Where training starts (solve.py): ("classifier", backbone) = the backbone's FCN
    # initialisation made by surgery.py; ("model", name) = that model trained;
    # ("streams", (a, b)) = one trained model per stream of a late-fusion net.
    init_from: Tuple = ("classifier", "vgg16")
    test_interval: int = 4000                # solve.py scores this often (the release's step)
    train_iters: int = 100000                # solve.py trains this long (the release's loop)

    @property
    def starts_from(self):
        """The zoo's models whose trained weights this one starts from (none when it
        starts from a classifier)."""
        kind, what = self.init_from
        return {"model": (what,), "streams": tuple(what)}.get(kind, ())

    @property
    def released_weights(self):
        """Where the released caffemodel goes (None if there is none)."""
        if not self.caffemodel_url:
            return None
        return self.dir / self.caffemodel_url.rsplit("/", 1)[1]

    @property
    def our_weights(self):
        """Where solve.py puts this model trained (with its default --out)."""
        return OUT / self.name / "final.caffemodel"

    def trained_weights(self):
        """The one rule for a model's default weights, used wherever a model's weights
        are needed (infer.py, initialising 16s from 32s, late fusion): the weights
        trained here first, then the released caffemodel in the model directory."""
        return [self.our_weights] + ([self.released_weights] if self.released_weights else [])

    def weights(self):
        """The first of trained_weights() that exists, or None."""
        return next((p for p in self.trained_weights() if p.is_file()), None)

    @property
    def dir(self):
        return REPO / self.name

    def input_recipes(self):
        """{deploy net input: how a port makes it from a raw image} (Reader.recipe of its
        dataset: what the data layer does, from the dataset's facts)."""
        inputs = [name for name, _ in MODALITIES[self.modality]]
        return datasets.DATASETS[self.eval.dataset].input_recipes(self.modality, inputs)

    def data_needs(self):
        """What a data root must hold to train and score this model (datasets.holds)."""
        return [(self.train.dataset, self.train.split), (self.eval.dataset, self.eval.split)]

    def data_net(self, phase, split=None, data_root=None):
        """The committed train ("train") or evaluation ("eval") net of this model, its
        data layer's param_str pointed at ``split`` (when given) and at the data root:
        ``data_root``, else the one datasets.data_root finds holding that split."""
        name = self.files[0 if phase == "train" else 1]
        proto = text_format.Parse((self.dir / name).read_text(), caffe_pb2.NetParameter())
        layer = proto.layer[0]
        params = json.loads(layer.python_param.param_str)
        if split:
            params["split"] = split
        data = self.train if phase == "train" else self.eval
        params["data_root"] = str(datasets.data_root(data_root,
                                                     [(data.dataset, params["split"])]))
        layer.python_param.param_str = json.dumps(params, sort_keys=True)
        return proto

    def net(self, phase):
        data = {"train": self.train, "eval": self.eval, "deploy": None}[phase]
        return fcn(self.backbone, self.stride, self.heads, self.modality, data, self.atonce,
                   self.normalize)

    def solver(self):
        s = caffe_pb2.SolverParameter()
        s.train_net = self.files[0]
        s.test_net.append(self.files[1])
        # One source of truth: the number of images in the evaluation split.
        s.test_iter.append(datasets.DATASETS[self.eval.dataset].splits[self.eval.split])
        s.test_interval = 999999999          # the test net is made, scoring is solve.py's job
        s.display = 20
        s.average_loss = 20
        s.lr_policy = "fixed"
        s.base_lr = self.base_lr
        s.momentum = self.momentum
        s.iter_size = self.iter_size
        s.max_iter = self.max_iter
        s.weight_decay = 0.0005
        if self.snapshot:
            s.snapshot = self.snapshot
            s.snapshot_prefix = "snapshot/train"
        s.test_initialization = False
        return s


VOC = dict(train=Data("sbdd", "train"), eval=Data("voc", "seg11valid"),
           files=("train.prototxt", "val.prototxt"))
NYUD = dict(train=Data("nyud", "trainval"), eval=Data("nyud", "test"),
            files=("trainval.prototxt", "test.prototxt"), heads=heads("nyud"),
            max_iter=300000, snapshot=2000, test_interval=2000)     # release: 50 x 2000
SIFTFLOW = dict(train=Data("siftflow", "trainval"), eval=Data("siftflow", "test"),
                files=("trainval.prototxt", "test.prototxt"),
                heads=heads("siftflow", ("_sem", "sem"), ("_geo", "geo")),
                max_iter=300000, snapshot=None, test_interval=2000)          # release: 50 x 2000
CONTEXT = dict(train=Data("pascalcontext", "train"), eval=Data("pascalcontext", "val"),
               files=("train.prototxt", "val.prototxt"), heads=heads("pascalcontext"),
               max_iter=300000, test_interval=8000, train_iters=400000)     # release: 50 x 8000
CAMVID = dict(train=Data("camvid", "train"), eval=Data("camvid", "val"),
              files=("train.prototxt", "val.prototxt"), heads=heads("camvid"),
              backbone="squeezenet", init_from=("classifier", "squeezenet"), normalize=True,
              base_lr=1e-3, momentum=0.9, max_iter=20000, test_interval=1000, snapshot=1000,
              train_iters=20000)

MODELS = {m.name: m for m in [
    # the release publishes no hashes of its weights; these two were recorded by other
    # projects that download them
    Model("voc-fcn32s", **VOC, base_lr=1e-10, caffemodel_url=DL + "fcn32s-heavy-pascal.caffemodel",
          weights_known=Known(sha1="05eb922d7829c39448f57e5ab9d8cd75d6c0be6d",
                              source="OpenCV's test-data download script (opencv_extra "
                                     "testdata/dnn/download_models.py, older versions)")),
    Model("voc-fcn16s", **VOC, stride=16, base_lr=1e-12,
          caffemodel_url=DL + "fcn16s-heavy-pascal.caffemodel", init_from=("model", "voc-fcn32s")),
    Model("voc-fcn8s", **VOC, stride=8, base_lr=1e-14,
          caffemodel_url=DL + "fcn8s-heavy-pascal.caffemodel", init_from=("model", "voc-fcn16s"),
          weights_known=Known(sha1="c449ea74dd7d83751d1357d6a8c323fcf4038962",
                              md5="c03b2953ebd846c270da1a8e8f200c09",
                              source="sha1: OpenCV's test-data download script; md5: "
                                     "wkentaro/fcn (fcn/data.py, older versions)")),
    Model("voc-fcn8s-atonce", **{**VOC, "max_iter": 300000}, stride=8, atonce=True,
          train_iters=300000,                                               # release: 75 x 4000
          base_lr=1e-10, caffemodel_url=DL + "fcn8s-atonce-pascal.caffemodel"),
    Model("voc-fcn-alexnet", **VOC, backbone="caffenet", normalize=True,
          base_lr=1e-4, momentum=0.9, iter_size=20,
          caffemodel_url=DL + "fcn-alexnet-pascal.caffemodel",
          init_from=("classifier", "caffenet")),
    Model("nyud-fcn32s-color", **NYUD, base_lr=1e-10,
          caffemodel_url=DL + "nyud-fcn32s-color-heavy.caffemodel"),
    Model("nyud-fcn32s-hha", **NYUD, modality="hha", base_lr=1e-10,
          caffemodel_url=DL + "nyud-fcn32s-hha-heavy.caffemodel"),
    Model("nyud-fcn32s-color-d", **NYUD, modality="color-d", base_lr=1e-10),
    Model("nyud-fcn32s-color-hha", **NYUD, modality="color-hha", base_lr=1e-12,
          caffemodel_url=DL + "nyud-fcn32s-color-hha-heavy.caffemodel",
          init_from=("streams", ("nyud-fcn32s-color", "nyud-fcn32s-hha"))),
    Model("siftflow-fcn32s", **SIFTFLOW, base_lr=1e-10,
          caffemodel_url=DL + "siftflow-fcn32s-heavy.caffemodel"),
    Model("siftflow-fcn16s", **SIFTFLOW, stride=16, base_lr=1e-12,
          caffemodel_url=DL + "siftflow-fcn16s-heavy.caffemodel", init_from=("model", "siftflow-fcn32s")),
    # siftflow-fcn8s: 1e-12, not 1e-14 as the other 8s nets (the release's solver)
    Model("siftflow-fcn8s", **SIFTFLOW, stride=8, base_lr=1e-12,
          caffemodel_url=DL + "siftflow-fcn8s-heavy.caffemodel",
          init_from=("model", "siftflow-fcn16s")),
    Model("pascalcontext-fcn32s", **CONTEXT, base_lr=1e-10,
          caffemodel_url=DL + "pascalcontext-fcn32s-heavy.caffemodel"),
    Model("pascalcontext-fcn16s", **CONTEXT, stride=16, base_lr=1e-12,
          caffemodel_url=DL + "pascalcontext-fcn16s-heavy.caffemodel",
          init_from=("model", "pascalcontext-fcn32s")),
    Model("pascalcontext-fcn8s", **CONTEXT, stride=8, base_lr=1e-14,
          caffemodel_url=DL + "pascalcontext-fcn8s-heavy.caffemodel",
          init_from=("model", "pascalcontext-fcn16s")),
    # CPU-scale: SqueezeNet FCNs on CamVid (not in the release; see docs/camvid.md)
    Model("camvid-fcn16s-squeezenet", **CAMVID, stride=16),
    Model("camvid-fcn8s-squeezenet", **CAMVID, stride=8),
    Model("camvid-fcn4s-squeezenet", **CAMVID, stride=4),
]}



@dataclass(frozen=True)
class Classifier:
    """An ILSVRC classifier the FCNs are cut from, and its files in ilsvrc-nets/."""
    backbone: str
    proto: str
    weights: str
    url: Optional[str]
    input_hw: Tuple[int, int]
    fcn_init: str                            # what surgery.py makes from it
    known: Known = Known()                   # its size/checksums on record

    @property
    def dir(self):
        return REPO / "ilsvrc-nets"

    def how_to_get(self):
        if self.url:
            return f"get it with 'python prepare.py get weights {self.backbone}'"
        return (f"make {self.dir.name}/{self.weights} with 'python prepare.py get weights "
                f"{self.backbone}' (it decodes the compressed SqueezeNet in the shared data)")


CLASSIFIERS = {c.backbone: c for c in [
    Classifier("vgg16", "VGG_ILSVRC_16_layers_deploy.prototxt", "VGG_ILSVRC_16_layers.caffemodel",
               "http://www.robots.ox.ac.uk/~vgg/software/very_deep/caffe/"
               "VGG_ILSVRC_16_layers.caffemodel", (224, 224), "vgg16-fcn.caffemodel",
               Known(sha1="9363e1f6d65f7dba68c4f27a1e62105cdf6c4e24",
                     source="OpenCV's test-data download script (opencv_extra "
                            "testdata/dnn/download_models.py, older versions)")),
    Classifier("caffenet", "bvlc_reference_caffenet_deploy.prototxt",
               "bvlc_reference_caffenet.caffemodel",
               DL + "bvlc_reference_caffenet.caffemodel", (227, 227), "caffenet-fcn.caffemodel",
               Known(sha1="4c8d77deb20ea792f84eb5e6d0a11ca0a8660a46",
                     source="BVLC Caffe's models/bvlc_reference_caffenet/readme.md")),
    # No download: fcn/squeezenet.py decodes the Deep Compression file in ../shared/data
    # (python prepare.py get weights squeezenet).
    Classifier("squeezenet", "squeezenet_v1.0_deploy.prototxt", "squeezenet_v1.0.caffemodel",
               None, (227, 227), "squeezenet-fcn.caffemodel"),
]}


def model_from_arg(arg):
    """The zoo's model named by a directory argument (``voc-fcn8s``, ``./voc-fcn8s/``,
    or a path ending in one); one line listing the models otherwise."""
    name = Path(str(arg).rstrip("/")).name
    if name not in MODELS:
        raise BuildError(f"unknown model {str(arg)!r}; models: {', '.join(MODELS)}")
    return MODELS[name]

