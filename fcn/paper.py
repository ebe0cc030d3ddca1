"""Facts about the paper and the release, beside the zoo: the datasets and models
of each reproduction pipeline, in the paper's order, and the figures to compare
with (the release's README, the paper's tables), each with its source and what was
checked against a readable copy (docs/reproduce.md). reproduce.py runs them."""
from dataclasses import dataclass
from typing import Tuple


@dataclass(frozen=True)
class Pipeline:
    data: Tuple[str, ...]       # prepare.py datasets, in the order they are made
    models: Tuple[str, ...]     # zoo.MODELS, in training order


PIPELINES = {
    "voc": Pipeline(("sbdd", "voc"), ("voc-fcn32s", "voc-fcn16s", "voc-fcn8s", "voc-fcn8s-atonce",
                                      "voc-fcn-alexnet")),
    "nyud": Pipeline(("nyud",), ("nyud-fcn32s-color", "nyud-fcn32s-hha", "nyud-fcn32s-color-hha",
                                 "nyud-fcn32s-color-d")),
    "siftflow": Pipeline(("siftflow",), ("siftflow-fcn32s", "siftflow-fcn16s", "siftflow-fcn8s")),
    "pascalcontext": Pipeline(("pascalcontext",), ("pascalcontext-fcn32s", "pascalcontext-fcn16s",
                                                   "pascalcontext-fcn8s")),
}

# Figures to compare with, in percent. The release's README gives mean IU on
# seg11valid for its VOC models; the paper the four metrics of its tables (SIFT
# Flow also geometric accuracy). Each row says where it comes from and whether it
# was checked against a readable copy of that source (docs/reproduce.md).
RELEASE = {"voc-fcn32s": 63.6, "voc-fcn16s": 65.0, "voc-fcn8s": 65.5, "voc-fcn8s-atonce": 65.4,
           "voc-fcn-alexnet": 48.0}
PAPER_KEYS = ("pixel_accuracy", "mean_accuracy", "mean_iu", "fw_iu", "geo_accuracy")


@dataclass(frozen=True)
class Figures:
    values: Tuple[float, ...]   # in PAPER_KEYS order
    source: str                 # the table they come from
    checked: str                # what was checked against a readable copy, or "unverified"


PAMI_VOC = ("PAMI 2016, VOC2011 seg11valid", "mean IU: the release's README; the other "
            "three unverified (no readable copy of the PAMI tables found)")
PAMI_UNVERIFIED = "unverified: no readable copy of the PAMI tables found"
PAPER = {
    "voc-fcn32s": Figures((90.5, 76.5, 63.6, 83.5), *PAMI_VOC),
    "voc-fcn16s": Figures((91.0, 78.1, 65.0, 84.3), *PAMI_VOC),
    "voc-fcn8s": Figures((91.2, 77.6, 65.5, 84.5), *PAMI_VOC),
    "voc-fcn8s-atonce": Figures((91.1, 78.5, 65.4, 84.4), *PAMI_VOC),
    "nyud-fcn32s-color": Figures((61.8, 44.7, 31.6, 46.0), "PAMI 2016, NYUDv2", PAMI_UNVERIFIED),
    "nyud-fcn32s-hha": Figures((58.3, 35.7, 25.2, 41.7), "PAMI 2016, NYUDv2", PAMI_UNVERIFIED),
    "nyud-fcn32s-color-d": Figures((62.1, 44.8, 31.7, 46.3), "PAMI 2016, NYUDv2",
                                   PAMI_UNVERIFIED),
    "nyud-fcn32s-color-hha": Figures((65.3, 44.0, 33.3, 48.6), "PAMI 2016, NYUDv2",
                                     PAMI_UNVERIFIED),
    "siftflow-fcn16s": Figures((85.2, 51.7, 39.5, 76.1, 94.3), "CVPR 2015 Table 5 (SIFT Flow)",
                               "all five: CVPR 2015 Table 5"),
    "pascalcontext-fcn32s": Figures((65.5, 49.1, 36.7, 50.9), "PAMI 2016, PASCAL-Context 59",
                                    PAMI_UNVERIFIED),
    "pascalcontext-fcn16s": Figures((66.9, 51.3, 38.4, 52.3), "PAMI 2016, PASCAL-Context 59",
                                    PAMI_UNVERIFIED),
    "pascalcontext-fcn8s": Figures((67.5, 52.3, 39.1, 53.0), "PAMI 2016, PASCAL-Context 59",
                                   PAMI_UNVERIFIED),
}
