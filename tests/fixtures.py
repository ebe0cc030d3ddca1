"""Small datasets written in the real formats of the originals: JPEG images,
palette and greyscale PNG labels, 16-bit depth PNGs, MATLAB .mat files with the
variables and structs the originals use, split lists as the originals write them.
Each ``make_*`` writes the *raw* layout (what a download unpacks); prepare.py's
derive step turns it into what the models read."""
from pathlib import Path

import numpy as np
import scipy.io
import scipy.sparse
from PIL import Image

from fcn import images, visual

SIZE = (20, 28)     # H, W: small enough for VGG-16 forward/backward in a test


def save_jpg(path, rng, size=SIZE):
    path.parent.mkdir(parents=True, exist_ok=True)
    img = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
    Image.fromarray(img).save(path, quality=95)


def save_palette_png(path, label):
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.frombytes("P", label.shape[::-1], np.ascontiguousarray(label, np.uint8).tobytes())
    im.putpalette(visual.palette().tobytes())
    im.save(path)


def save_grey_png(path, a):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(a)).save(path)


def write_list(path, lines):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{l}\n" for l in lines))


def labels(rng, classes, size=SIZE, void=255):
    a = rng.integers(0, classes, size).astype(np.uint8)
    a[0, :3] = void
    return a


def make_voc(root, rng, train=("2008_000001", "2008_000002"),
             val=("2008_000003", "2008_000004", "2008_000005")):
    d = Path(root) / "pascal/VOC2011"
    for i in (*train, *val):
        save_jpg(d / "JPEGImages" / f"{i}.jpg", rng)
        save_palette_png(d / "SegmentationClass" / f"{i}.png", labels(rng, 21))
    write_list(d / "ImageSets/Segmentation/train.txt", train)
    write_list(d / "ImageSets/Segmentation/val.txt", val)
    return d


def make_sbdd(root, rng, train=("2008_000003", "2008_000010", "2008_000011"),
              val=("2008_000012",)):
    """SBD's cls/<id>.mat: a struct GTcls with Boundaries (cell of sparse maps),
    Segmentation (uint8, 0 background, 1..20) and CategoriesPresent."""
    d = Path(root) / "sbdd/dataset"
    for i in (*train, *val):
        save_jpg(d / "img" / f"{i}.jpg", rng)
        seg = rng.integers(0, 21, SIZE).astype(np.uint8)
        bounds = np.empty((20, 1), dtype=object)
        for k in range(20):
            bounds[k, 0] = scipy.sparse.csc_matrix(SIZE, dtype=np.uint8)
        (d / "cls").mkdir(parents=True, exist_ok=True)
        scipy.io.savemat(d / "cls" / f"{i}.mat", {"GTcls": {
            "Boundaries": bounds, "Segmentation": seg,
            "CategoriesPresent": np.unique(seg[seg > 0]).astype(np.uint8)}})
    write_list(d / "train.txt", train)
    write_list(d / "val.txt", val)
    return d


def make_nyud(root, rng, train=("5001", "5002"), val=("5003",), test=("5004", "5005")):
    """The release's NYUDv2 layout: data/{images,depth,hha}/img_<id>.png and
    segmentation/img_<id>.mat ('segmentation', 0 unlabeled, 1..40)."""
    d = Path(root) / "nyud"
    for i in (*train, *val, *test):
        save_grey_png(d / "data/images" / f"img_{i}.png",
                      rng.integers(0, 256, (*SIZE, 3), dtype=np.uint8))
        save_grey_png(d / "data/depth" / f"img_{i}.png",
                      rng.integers(500, 10000, SIZE).astype(np.uint16))
        save_grey_png(d / "data/hha" / f"img_{i}.png",
                      rng.integers(0, 256, (*SIZE, 3), dtype=np.uint8))
        (d / "segmentation").mkdir(parents=True, exist_ok=True)
        scipy.io.savemat(d / "segmentation" / f"img_{i}.mat",
                         {"segmentation": rng.integers(0, 41, SIZE).astype(np.uint8)})
    for name, ids in (("train", train), ("val", val), ("test", test)):
        write_list(d / f"{name}.txt", ids)
    return d


SUB = "spatial_envelope_256x256_static_8outdoorcategories"


def make_siftflow(root, rng, ids=("coast_a1", "coast_a2", "forest_b1", "street_c1", "street_c2"),
                  test=("forest_b1",), unlabelled=("street_c2",)):
    """SIFT Flow: Images/<sub>/<id>.jpg, {Semantic,Geo}Labels/<sub>/<id>.mat with S
    (semantic 0 unlabeled, 1..33; geometric -1 unlabeled, 1..3)."""
    d = Path(root) / "sift-flow"
    for i in ids:
        save_jpg(d / "Images" / SUB / f"{i}.jpg", rng)
        if i in unlabelled:
            continue
        for folder, lo, hi in (("SemanticLabels", 0, 34), ("GeoLabels", -1, 4)):
            (d / folder / SUB).mkdir(parents=True, exist_ok=True)
            scipy.io.savemat(d / folder / SUB / f"{i}.mat",
                             {"S": rng.integers(lo, hi, SIZE).astype(np.int32)})
    write_list(d / "release-test.txt", test)
    return d


def context_label_lists():
    """(full names, 59 task names): the task list spells three classes differently,
    as the real 59_labels.txt does."""
    task = ["aeroplane", "diningtable", "bedcloth", "clothes"] + [f"thing{k}" for k in range(55)]
    full = ["accordion", "aeroplane", "table", "bedclothes", "cloth", "unused1"] + \
        [f"thing{k}" for k in range(55)] + ["unused2", "unused3"]
    return full, task


def make_context(root, rng, train=("2008_000020", "2008_000021"), val=("2008_000022",)):
    voc = Path(root) / "pascal/VOC2010"
    ctx = Path(root) / "pascal-context"
    full, task = context_label_lists()
    for i in (*train, *val):
        save_jpg(voc / "JPEGImages" / f"{i}.jpg", rng)
        (ctx / "trainval").mkdir(parents=True, exist_ok=True)
        scipy.io.savemat(ctx / "trainval" / f"{i}.mat",
                         {"LabelMap": rng.integers(1, len(full) + 1, SIZE).astype(np.uint16)})
    write_list(voc / "ImageSets/Main/train.txt", train)
    write_list(voc / "ImageSets/Main/val.txt", val)
    write_list(ctx / "labels.txt", [f"{k + 1}: {n}" for k, n in enumerate(full)])
    write_list(ctx / "59_labels.txt", [f"{k + 1}: {n}" for k, n in enumerate(task)])
    return voc, ctx


def make_camvid(root, rng, splits=(("train", 3), ("val", 2), ("test", 2))):
    d = Path(root) / "camvid"
    for split, n in splits:
        names = [f"0001TP_{split}{k:03d}.png" for k in range(n)]
        for name in names:
            save_grey_png(d / split / name, rng.integers(0, 256, (*SIZE, 3), dtype=np.uint8))
            save_grey_png(d / f"{split}annot" / name, rng.integers(0, 12, SIZE).astype(np.uint8))
        write_list(d / f"{split}.txt", [f"/SegNet/CamVid/{split}/{n_} "
                                        f"/SegNet/CamVid/{split}annot/{n_}" for n_ in names])
    return d


def make_all(root, seed=0):
    """Every dataset, raw, under one data root."""
    rng = np.random.default_rng(seed)
    make_sbdd(root, rng)
    make_voc(root, rng)
    make_nyud(root, rng)
    make_siftflow(root, rng)
    make_context(root, rng)
    make_camvid(root, rng)
    return Path(root)


def fake_png(path, w, h):
    """A PNG header claiming w x h pixels (never decoded)."""
    return images.header_only_png(path, w, h)
