"""PASCAL VOC 2011 segmentation, scored on seg11valid: VOC2011 segmentation val minus
SBD train (the paper's footnote 7: the two intersect). data/pascal/README.md."""
from fcn.datasets import sbdd
from fcn.datasets.base import Dataset, Reader, read_list, write_list
from fcn.datasets.pascal import PASCAL_MEAN, VOC_CLASSES
from fcn.downloads import Known, Source
from fcn.errors import DataError

URL = "http://host.robots.ox.ac.uk/pascal/VOC/voc2011/VOCtrainval_25-May-2011.tar"


class VOCReader(Reader):
    layout = ("<dir>/JPEGImages/<id>.jpg, <dir>/SegmentationClass/<id>.png (palette), "
              "<dir>/ImageSets/Segmentation/<split>.txt")

    def split_file(self, split):
        return self.root / "ImageSets" / "Segmentation" / f"{split}.txt"

    def path(self, id_, top):
        if top == "label":
            return self.root / "SegmentationClass" / f"{id_}.png"
        return self.root / "JPEGImages" / f"{id_}.jpg"


def derive(root):
    """seg11valid: VOC2011 segmentation val minus SBD train."""
    voc = root / DATASET.dir
    val = read_list(voc / "ImageSets/Segmentation/val.txt", "VOC2011 segmentation val list")
    sbd_train = root / sbdd.DATASET.dir / "train.txt"
    if not sbd_train.is_file():
        raise DataError(f"seg11valid needs SBD's train list at {sbd_train}; "
                        "run 'python prepare.py get sbdd' first")
    train = set(read_list(sbd_train, "SBD train list"))
    write_list(voc / "ImageSets/Segmentation/seg11valid.txt",
               [i for i in val if i not in train], DATASET, "seg11valid")


DATASET = Dataset(
    "voc", "VOCSegDataLayer", "pascal/VOC2011", {"seg11valid": 736}, ("seg11valid",),
    VOCReader, {"label": VOC_CLASSES}, PASCAL_MEAN,
    sources=(Source(URL, "pascal/VOC2011", "TrainVal/VOCdevkit/VOC2011/", known=Known(
        md5="6c3384ef61512963050cb5d687e5bf1e", sha1="71ceda5bc8ce4a6486f7996b0924eee265133895",
        source="md5: torchvision datasets/voc.py; sha1: skdata pascal.py")),),
    derive=derive, derived="seg11valid", needs=("sbdd",))
