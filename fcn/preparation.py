"""Datasets made ready: downloaded (checksummed, resumable), unpacked, derived (what
the models read, from the dataset module's derive) and checked, every problem at
once. prepare.py is its command line; reproduce.py runs it as its data steps."""
import shutil
from pathlib import Path

from fcn import downloads, files
from fcn.archives import unpack
from fcn.datasets import DATASETS, check_reader
from fcn.errors import DataError
from fcn.progress import Progress, say


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
