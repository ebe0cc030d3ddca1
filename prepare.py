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
import sys

from fcn import cli, downloads
from fcn.datasets import DATASETS, checked_root, data_root
from fcn.preparation import check, derive, get
from fcn.progress import say
from fcn.weights import get_weights, weights_names, weights_source
from fcn.errors import UserError


# ---------------------------------------------------------------------------
# CLI


def main(argv=None):
    p = argparse.ArgumentParser(prog="prepare.py", description=__doc__.split("\n")[0])
    p.add_argument("command", choices=["get", "derive", "check"])
    p.add_argument("datasets", nargs="+", metavar="DATASET",
                   help="datasets; or 'weights' followed by models / classifiers (get)")
    cli.add_data_root_flag(p)
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
            raise UserError("weights: use 'prepare.py get weights NAME...'; names: "
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
        raise UserError(f"unknown dataset {unknown[0]!r}; datasets: {', '.join(DATASETS)}"
                            " (or 'weights NAME...')")
    if args.command != "check":
        checked_root(args.data_root, write=True)


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
