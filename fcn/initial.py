"""Where a model's training starts, as in the release: the FCN initialisation of its
classifier (32s, at-once, AlexNet, SqueezeNet), the trained coarser net (16s from
32s, 8s from 16s), one trained net per stream (late fusion); and loading those
weights into the training net by layer name (early fusion: conv1 widened by a
depth channel). One line, naming the command that makes or gets them, when they
are missing."""
from pathlib import Path

from fcn import caffemodel, cli, files, squeezenet, zoo
from fcn.builder import fcn_backbone
from fcn.errors import UserError
from fcn.paths import REPO, shown
from fcn.progress import say
from fcn.surgery import SurgeryError, color_depth_conv1, transplant


def make_fcn_init(backbone, proto=None, weights=None, out=None):
    """Classifier -> FCN initialisation file (surgery.py): the classifier's
    convolutions kept, fc6/fc7 recast as convolutions holding the same numbers, its
    classifier dropped; returns (out path, transplant summary)."""
    c = zoo.CLASSIFIERS[backbone]
    proto = Path(proto or c.dir / c.proto)
    weights = Path(weights or c.dir / c.weights)
    out = cli.output_file(out or c.dir / c.fcn_init, "--out")
    files.check_replaceable(out, "--out", inputs=[proto, weights], ours=caffemodel.is_caffemodel)
    if not proto.is_file():
        raise SurgeryError(f"classifier net not found: {proto} (python nets.py ilsvrc-nets "
                           "makes it)")
    if not weights.is_file():
        raise SurgeryError(f"classifier weights not found: {weights}; {c.how_to_get()} "
                           "(see ilsvrc-nets/README.md)")
    classifier = caffemodel.load_net(proto, weights)
    fcn = caffemodel.load_net(fcn_backbone(backbone))
    summary = transplant(fcn, classifier)
    del classifier
    caffemodel.save_atomic(fcn, out)
    return out, summary


def squeezenet_fcn(src, classifier, out=None):
    """The ImageNet SqueezeNet of ``src`` (Deep Compression) decoded into the caffemodel
    ``classifier``, then cast into the FCN initialisation ``out`` (default
    ilsvrc-nets/): the one way make demo, prepare.py get weights and the GPU check
    make it. Returns (out, (non-zero weights, weights))."""
    counts = squeezenet.decode_to_caffemodel(src, classifier)
    out, _ = make_fcn_init("squeezenet", weights=classifier, out=out)
    return out, counts


def solve_py(name):
    """The command that trains ``name``, as typed from the working directory."""
    return f"python {shown(REPO / name / 'solve.py')}"


def missing_trained(source):
    got = (f", or get the released weights with 'python prepare.py get weights {source.name}'"
           if source.released_weights else "")
    return (f"train {source.name} first ({solve_py(source.name)} writes "
            f"{shown(source.our_weights)}){got}")


def initial_weights(model, given):
    """[(weights path, how it is used)] for the model's initialisation; one line if
    a file is missing, naming it and how to make or get it."""
    kind, what = model.init_from
    if kind == "streams":
        paths = given.split(",") if given else [zoo.MODELS[s].weights() for s in what]
        if len(paths) != len(what):
            raise UserError(f"--weights for {model.name} takes two files, "
                            f"'{what[0]}.caffemodel,{what[1]}.caffemodel'")
        for f, s in zip(paths, what):
            if f is None:
                raise UserError(f"missing initial weights for the {s} stream: "
                                + missing_trained(zoo.MODELS[s]))
        return list(zip(paths, what))
    if given:
        return [(given, "given")]
    if kind == "classifier":
        c = zoo.CLASSIFIERS[what]
        path = c.dir / c.fcn_init
        if not path.is_file():
            make = (f"'python prepare.py get weights {what}' " +
                    ("downloads the classifier and makes them" if c.url else
                     "decodes the classifier (the compressed SqueezeNet of the shared data) "
                     "and makes them"))
            raise UserError(f"missing initial weights {shown(path)}: {make}")
        return [(path, kind)]
    source = zoo.MODELS[what]
    path = source.weights()
    if path is None:
        raise UserError(f"missing initial weights for {model.name}: {missing_trained(source)}")
    return [(path, kind)]


def initialise(net, model, weights):
    """Load the initial weights into the training net, by layer name."""
    for path, how in weights:
        path = Path(path)
        if how in zoo.MODELS:                                   # a late-fusion stream
            src_model = zoo.MODELS[how]
            src = caffemodel.load_net(src_model.net("deploy"), path)
            transplant(net, src, suffix=src_model.modality)
            del src
            continue
        shapes = caffemodel.read_shapes(path)
        if model.modality == "color-d" and "conv1_1_bgrd" not in shapes:
            # from the colour backbone: everything but conv1, then conv1 + a depth channel
            src = caffemodel.load_net(fcn_backbone(model.backbone), path)
            transplant(net, src)
            color_depth_conv1(net, src)
            del src
            continue
        shared = caffemodel.copy_weights(net, path, complete=False)
        say(f"initialised {len(shared)} layers from {shown(path)}")
