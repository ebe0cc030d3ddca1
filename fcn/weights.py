"""Weights where the commands look for them: the released weights of a model, or an
ILSVRC classifier (VGG-16, CaffeNet downloaded and checksummed; SqueezeNet decoded
from the shared data) with its FCN initialisation (surgery). prepare.py get
weights is its command line."""
from pathlib import Path

from fcn import downloads, squeezenet, zoo
from fcn.errors import UserError
from fcn.initial import make_fcn_init, squeezenet_fcn
from fcn.progress import say


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
    raise UserError(f"{name!r} {why}; weights: {', '.join(weights_names())}")


def get_weights(name, trust_new=False, root=None):
    """Download ``name``'s weights (checksummed, resumable) to where the commands look
    for them (SqueezeNet: decode it from squeezenet/ under the data root ``root``, by
    default the shared data); for a classifier, also make its FCN initialisation
    (surgery). Returns the path the commands use."""
    url, dest, known, classifier = weights_source(name)
    if url is None:
        src = squeezenet.source_dir(root)
        say(f"weights {name}: decoding {src / squeezenet.COMPRESSED}, then surgery")
        init, _ = squeezenet_fcn(src, dest)
        say(f"  {init} (the FCN initialisation)")
        return init
    say(f"weights {name}: {url}")
    downloads.download(url, dest, known, trust_new)
    if classifier is None:
        say(f"  {dest}")
        return dest
    init = classifier.dir / classifier.fcn_init
    if not init.is_file() or init.stat().st_mtime < dest.stat().st_mtime:
        make_fcn_init(classifier.backbone)
    say(f"  {init} (the FCN initialisation)")
    return init
