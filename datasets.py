"""Facts about every dataset the project uses, defined once.

Pure Python (no Caffe): the net builder reads the split sizes for the solvers'
``test_iter``, the data layers read the means, the check command reads the
expected counts. Each entry says what a Python data layer needs to find it.
"""
from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple


@dataclass(frozen=True)
class Dataset:
    name: str
    layer: str                       # class name in layers.py
    dir: str                         # default folder, relative to the data root
    splits: Dict[str, int]           # split name -> number of images
    used: Tuple[str, ...]            # the splits the zoo trains and scores on
    mean: Optional[Tuple[float, ...]] = None   # BGR mean subtracted from images
    classes: Tuple[str, ...] = ()              # names in model output order
    size: Tuple[int, int] = (375, 500)         # a typical image (H, W): timing estimates
    extra: Dict[str, object] = field(default_factory=dict)


# BGR means of the ILSVRC-trained VGG-16 / CaffeNet inputs used for PASCAL data.
PASCAL_MEAN = (104.00699, 116.66877, 122.67892)

VOC_CLASSES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car",
               "cat", "chair", "cow", "diningtable", "dog", "horse", "motorbike", "person",
               "pottedplant", "sheep", "sofa", "train", "tvmonitor")
NYUD_CLASSES = ("wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window",
                "bookshelf", "picture", "counter", "blinds", "desk", "shelves", "curtain",
                "dresser", "pillow", "mirror", "floor mat", "clothes", "ceiling", "books",
                "refridgerator", "television", "paper", "towel", "shower curtain", "box",
                "whiteboard", "person", "night stand", "toilet", "sink", "lamp", "bathtub",
                "bag", "otherstructure", "otherfurniture", "otherprop")
SIFTFLOW_CLASSES = ("awning", "balcony", "bird", "boat", "bridge", "building", "bus", "car",
                    "cow", "crosswalk", "desert", "door", "fence", "field", "grass", "moon",
                    "mountain", "person", "plant", "pole", "river", "road", "rock", "sand",
                    "sea", "sidewalk", "sign", "sky", "staircase", "streetlight", "sun", "tree",
                    "window")
SIFTFLOW_GEO_CLASSES = ("sky", "horizontal", "vertical")
CONTEXT_CLASSES = VOC_CLASSES + (
    "bag", "bed", "bench", "book", "building", "cabinet", "ceiling", "clothes", "computer",
    "cup", "door", "fence", "floor", "flower", "food", "grass", "ground", "keyboard", "light",
    "mountain", "mouse", "curtain", "platform", "sign", "plate", "road", "rock", "shelves",
    "sidewalk", "sky", "snow", "bedcloth", "track", "tree", "truck", "wall", "water", "window",
    "wood")
CAMVID_CLASSES = ("sky", "building", "pole", "road", "pavement", "tree", "signsymbol", "fence",
                  "car", "pedestrian", "bicyclist")

DATASETS = {d.name: d for d in [
    # PASCAL VOC 2011 segmentation; seg11valid = VOC2011 seg val minus SBD train.
    Dataset("voc", "VOCSegDataLayer", "pascal/VOC2011",
            {"seg11valid": 736}, ("seg11valid",), PASCAL_MEAN, VOC_CLASSES),
    # Semantic Boundaries Dataset (Hariharan et al.), the training set of the VOC models.
    Dataset("sbdd", "SBDDSegDataLayer", "sbdd/dataset",
            {"train": 8498, "val": 2857}, ("train",), PASCAL_MEAN, VOC_CLASSES),
    # NYUDv2 with Gupta et al.'s 40-class labels and HHA; trainval = train + val.
    Dataset("nyud", "NYUDSegDataLayer", "nyud",
            {"train": 381, "val": 414, "trainval": 795, "test": 654}, ("trainval", "test"),
            (116.190, 97.203, 92.318), NYUD_CLASSES, (425, 560),
            extra={"hha_mean": (132.431, 94.076, 118.477), "depth_mean": 7.844}),
    # SIFT Flow: 33 semantic classes and 3 geometric classes.
    Dataset("siftflow", "SIFTFlowSegDataLayer", "sift-flow",
            {"trainval": 2486, "test": 200}, ("trainval", "test"), (114.578, 115.294, 108.353), SIFTFLOW_CLASSES,
            (256, 256),
            extra={"geo_classes": SIFTFLOW_GEO_CLASSES}),
    # PASCAL-Context, 59 most frequent classes + background, on VOC2010 images.
    Dataset("pascalcontext", "PASCALContextSegDataLayer", "pascal/VOC2010",
            {"train": 4998, "val": 5105}, ("train", "val"), PASCAL_MEAN, CONTEXT_CLASSES,
            extra={"context_dir": "pascal-context"}),
    # CamVid as split for SegNet (11 classes, 11 = void), for CPU-scale runs.
    Dataset("camvid", "CamVidSegDataLayer", "camvid",
            {"train": 367, "val": 101, "test": 233}, ("train", "val"), PASCAL_MEAN, CAMVID_CLASSES, (360, 480)),
]}


def head_classes(dataset, label_top):
    """Class names of one label top ('label', or SIFT Flow's 'sem' / 'geo')."""
    d = DATASETS[dataset]
    return d.extra["geo_classes"] if label_top == "geo" else d.classes
