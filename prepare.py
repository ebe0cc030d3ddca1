"""Get the datasets, derive what the models read, and check them; get the weights.

    python prepare.py get DATASET...    download (progress bar, resumable, checksummed),
                                        unpack, then derive
    python prepare.py derive DATASET... derive only (after unpacking by hand)
    python prepare.py check DATASET     verify a dataset is complete; report every
                                        problem; exit 1 if there is any
    python prepare.py get weights NAME... the released weights of a model directory, or an
                                        ILSVRC classifier (vgg16, caffenet; squeezenet is
                                        decoded from the shared data) and its FCN
                                        initialisation, where the commands look for them
A user mistake (an unknown dataset, a --data-root that cannot be written, a failed
download, a checksum that does not match the record, a damaged archive) stops
with one line and exit 2. A download with nothing on record is refused unless
--trust-new-downloads (fcn/downloads.py).

Datasets: sbdd, voc, nyud, siftflow, pascalcontext, camvid (see data/README.md; each
is one module of fcn/datasets/). Everything lands under the data root: --data-root,
else $FCN_DATA, else the repo's data/ (check also looks in the shared data beside the
repo; fcn.datasets.data_root).
"""
import argparse
import gzip
import lzma
import shutil
import sys
import tarfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath

import surgery
from fcn import cli, downloads, files, squeezenet, zoo
from fcn.datasets import DATASETS, check_reader, data_root
from fcn.downloads import AUTO
from fcn.errors import DataError
from fcn.progress import Progress, say


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
        raise DataError(f"{archive} has no files under {prefix or strip!r}; is it the right "
                        "archive?")
    stamp.write_text(f"{count} files\n")
    say(f"  {count} files")


def get(dataset, root, sources=None, keep=True, trust_new=False):
    """Download, verify and unpack every source of ``dataset`` (default: its module's),
    then derive; one run at a time in a data root."""
    root = Path(root)
    with files.locked(root, "the data root"):
        for src in sources if sources is not None else DATASETS[dataset].sources:
            say(f"{dataset}: {src.url}")
            archive = downloads.download(src.url, root / "downloads" / src.filename,
                                         src.known, trust_new)
            if src.archive:
                unpack(archive, root / src.dest, src.strip)
            else:
                (root / src.dest).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(archive, root / src.dest)
        derive(dataset, root)
        if not keep:
            shutil.rmtree(root / "downloads", ignore_errors=True)


def derive(dataset, root):
    """What the models read, from what was downloaded (the dataset module's derive)."""
    d = DATASETS[dataset]
    if d.derive is not None:
        with files.locked(root, "the data root"):
            say(f"{dataset}: deriving {d.derived}")
            d.derive(Path(root))


# ---------------------------------------------------------------------------
# Check


def check(dataset, root, splits=None, out=say, counts=True):
    """Every problem of ``dataset`` under ``root``, all at once (a list of lines).
    ``counts``: a split whose size is not the paper's is a problem."""
    info = DATASETS[dataset]
    source = check_reader(dataset, root)
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
    return [c.backbone for c in zoo.CLASSIFIERS.values() if c.url] + \
        [m.name for m in zoo.MODELS.values() if m.caffemodel_url] + \
        [c.backbone for c in zoo.CLASSIFIERS.values() if not c.url]


def weights_source(name):
    """(url, where it goes, its record, the classifier or None) of a name of 'get
    weights': a model directory with released weights, or an ILSVRC classifier (url
    None: SqueezeNet, decoded from the shared data)."""
    c = zoo.CLASSIFIERS.get(name)
    if c is not None:
        return c.url, c.dir / c.weights, c.known, c
    m = zoo.MODELS.get(Path(name.rstrip("/")).name)
    if m is not None and m.caffemodel_url:
        return m.caffemodel_url, m.released_weights, m.weights_known, None
    why = "has no released weights" if m else "is neither a model nor a classifier"
    raise cli.UserError(f"{name!r} {why}; weights: {', '.join(weights_names())}")


def get_weights(name, trust_new=False, root=None):
    """Download ``name``'s weights (checksummed, resumable) to where the commands look
    for them (SqueezeNet: decode it from squeezenet/ under the data root ``root``, by
    default the shared data); for a classifier, also make its FCN initialisation
    (surgery). Returns the path the commands use."""
    url, dest, known, classifier = weights_source(name)
    if url is None:
        src = squeezenet.source_dir(root)
        say(f"weights {name}: decoding {src / squeezenet.COMPRESSED}")
        squeezenet.decode_to_caffemodel(src, dest)
    else:
        say(f"weights {name}: {url}")
        downloads.download(url, dest, known, trust_new)
    if classifier is None:
        say(f"  {dest}")
        return dest
    init = classifier.dir / classifier.fcn_init
    if not init.is_file() or init.stat().st_mtime < dest.stat().st_mtime:
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
                        "is printed); see fcn/downloads.py")
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
        cli.output_dir(data_root(args.data_root),
                       "--data-root" if args.data_root else "the data root")


def run(args):
    if args.datasets[0] == "weights":
        for n in args.datasets[1:]:
            get_weights(n, args.trust_new_downloads, args.data_root)
        return 0
    for d in args.datasets:
        needs = [(d, s) for s in args.split or DATASETS[d].used] if args.command == "check" else ()
        root = data_root(args.data_root, needs)
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
