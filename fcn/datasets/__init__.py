"""Every dataset the project uses, one module each (its facts, reader, sources with
their checksums, what prepare.py derives, its data layer's params), listed here; and
the one rule for where the data is (data_root) and for a data layer's param_str.

Adding a dataset: a module beside these that fills a Dataset record (base.py says
what each field is), its name in MODULES below, a class of its data layer in
layers.py, and its models in the zoo table (fcn/zoo.py). docs/zoo.md says more.
"""
import json
from pathlib import Path

from fcn import cli
from fcn.datasets import camvid, nyud, pascalcontext, sbdd, siftflow, voc

from fcn.errors import DataError, UserError
from fcn.paths import REPO, SHARED_DATA

MODULES = (voc, sbdd, nyud, siftflow, pascalcontext, camvid)
DATASETS = {m.DATASET.name: m.DATASET for m in MODULES}
# What a data root must hold besides the datasets' split lists: the compressed
# ImageNet SqueezeNet of the CPU-scale method (fcn/squeezenet.py decodes it).
SQUEEZENET_FILE = "squeezenet/compressed_SqueezeNet.net"


def head_classes(dataset, label_top):
    """Class names of one label top ('label', or SIFT Flow's 'sem' / 'geo')."""
    return DATASETS[dataset].heads[label_top]


# ---------------------------------------------------------------------------
# Where the data is


def holds(root, needs):
    """True when ``root`` has the files of everything in ``needs``: (dataset, split)
    pairs (the split's list is there) and "squeezenet" (the compressed file). A
    folder named like a dataset is not enough: data/camvid/ holds a README only."""
    root = Path(root)
    for need in needs:
        if need == "squeezenet":
            if not (root / SQUEEZENET_FILE).is_file():
                return False
            continue
        dataset, split = need
        if not DATASETS[dataset].open(root).split_file(split).is_file():
            return False
    return True


def data_root(explicit=None, needs=()):
    """The folder dataset paths are relative to, decided here and nowhere else:
    ``explicit`` (a command's --data-root, or a data layer's ``data_root`` param),
    else $FCN_DATA, else the repo's data/ when it holds what the caller ``needs``
    (see holds), else the shared data beside the repo (../shared/data: CamVid and
    SqueezeNet for the CPU-scale method) when that holds it, else data/. A relative
    path is relative to the working directory, as on every command line. Commands
    resolve it once and pass it on in the data layers' ``param_str``, never
    through the process environment."""
    if explicit:
        return Path(explicit).expanduser().resolve()
    env = cli.env_path("FCN_DATA")
    if env is not None:
        return env
    default = REPO / "data"
    needs = list(needs)
    if needs and not holds(default, needs) and holds(SHARED_DATA, needs):
        return SHARED_DATA
    return default


def checked_root(explicit=None, needs=(), write=False):
    """The data root a command uses (data_root), checked before any work, in one line
    when it cannot serve: a --data-root that is not a folder; with ``write`` (commands
    that download or stamp into it), one that cannot be made or written."""
    root = data_root(explicit, needs)
    flag = "--data-root" if explicit else "the data root"
    if write:
        return cli.output_dir(root, flag)
    if explicit and not root.is_dir():
        raise UserError(f"--data-root {explicit}: no such folder")
    return root


# ---------------------------------------------------------------------------
# A data layer's param_str (JSON): the dataset folder relative to the data root (or
# absolute) and the split are required; seed (default 1337), shuffle (default: true
# in TRAIN, false in TEST) and data_root are optional, plus a dataset's own keys.

REQUIRED = ("dir", "split")
OPTIONAL = ("seed", "shuffle", "data_root")


def param_str(dataset, split, modality, labels, seed):
    """JSON for the data layer of a net the builder writes: the dataset's folder
    (relative to the data root), split, seed, and the dataset's own params."""
    ds = DATASETS[dataset]
    return json.dumps({"dir": ds.dir, "split": split, "seed": seed,
                       **ds.layer_params(modality, labels)}, sort_keys=True)


def parse_params(param_str, dataset, layer_name="data layer"):
    """JSON param_str -> dict, with the keys checked; one-line DataError otherwise."""
    try:
        params = json.loads(param_str or "{}")
    except json.JSONDecodeError as e:
        raise DataError(f"{layer_name}: param_str is not JSON ({e.msg} at column {e.colno}): "
                        f"{param_str!r}") from None
    if not isinstance(params, dict):
        raise DataError(f"{layer_name}: param_str must be a JSON object, got {param_str!r}")
    allowed = {*REQUIRED, *OPTIONAL, *DATASETS[dataset].param_keys}
    missing = sorted(set(REQUIRED) - params.keys())
    unknown = sorted(params.keys() - allowed)
    if missing:
        raise DataError(f"{layer_name}: param_str lacks {', '.join(missing)} "
                        f"(required: {', '.join(REQUIRED)})")
    if unknown:
        raise DataError(f"{layer_name}: unknown param_str keys {', '.join(unknown)} "
                        f"(allowed: {', '.join(sorted(allowed))})")
    if "seed" in params and not isinstance(params["seed"], int):
        raise DataError(f"{layer_name}: seed must be an integer, got {params['seed']!r}")
    return params


def reader_for(dataset, params):
    """The reader a data layer's params name; the data root (data_root) is decided
    once here and kept in the params for the paths that hang off it."""
    root = data_root(params.get("data_root"), [(dataset, params["split"])])
    return DATASETS[dataset].open(root, dict(params, data_root=str(root)))


def check_reader(dataset, root):
    """The reader prepare.py check uses: every modality the dataset has."""
    ds = DATASETS[dataset]
    return ds.open(root, ds.check_params)
