"""Net surgery, as in the release: carry weights between nets (transplant), fixed
bilinear upsampling (interp, upsample_filt), and the FCN initialisation of an ILSVRC
classifier (the paper's "convolutionalization": its convolutions kept, fc6/fc7
recast as convolutions holding the same numbers, fc8 dropped; every FCN of that
backbone loads it by layer name).

    python surgery.py vgg16      ilsvrc-nets/VGG_ILSVRC_16_layers.caffemodel ->
                                 ilsvrc-nets/vgg16-fcn.caffemodel
    python surgery.py caffenet   ilsvrc-nets/bvlc_reference_caffenet.caffemodel ->
                                 ilsvrc-nets/caffenet-fcn.caffemodel
    python surgery.py squeezenet ilsvrc-nets/squeezenet_v1.0.caffemodel ->
                                 ilsvrc-nets/squeezenet-fcn.caffemodel
      [--proto P] [--weights W] [--out O]

The functions live in fcn/surgery.py and fcn/caffemodel.py; this module holds them
under the release's names.
"""
import argparse
import sys
from pathlib import Path

from fcn import cli, files, zoo
from fcn.builder import fcn_backbone
from fcn.caffemodel import is_caffemodel, load_net, save_atomic
from fcn.surgery import (SurgeryError, color_depth_conv1, deconvolutions,  # noqa: F401
                         expand_score, interp, transplant, transplant_summary, upsample_filt)


def make_fcn_init(backbone, proto=None, weights=None, out=None):
    """Classifier -> FCN initialisation file; returns (out path, transplant summary)."""
    c = zoo.CLASSIFIERS[backbone]
    proto = Path(proto or c.dir / c.proto)
    weights = Path(weights or c.dir / c.weights)
    out = cli.output_file(out or c.dir / c.fcn_init, "--out")
    files.check_replaceable(out, "--out", inputs=[proto, weights], ours=is_caffemodel)
    if not proto.is_file():
        raise SurgeryError(f"classifier net not found: {proto} (python nets.py ilsvrc-nets "
                           "makes it)")
    if not weights.is_file():
        raise SurgeryError(f"classifier weights not found: {weights}; {c.how_to_get()} "
                           "(see ilsvrc-nets/README.md)")
    classifier = load_net(proto, weights)
    fcn = load_net(fcn_backbone(backbone))
    summary = transplant(fcn, classifier)
    del classifier
    save_atomic(fcn, out)
    return out, summary


def main(argv=None):
    p = argparse.ArgumentParser(prog="surgery.py", description=__doc__.split("\n")[0])
    p.add_argument("backbone", choices=sorted(zoo.CLASSIFIERS))
    p.add_argument("--proto", help="classifier deploy prototxt (default: ilsvrc-nets/)")
    p.add_argument("--weights", help="classifier caffemodel (default: ilsvrc-nets/)")
    p.add_argument("--out", help="FCN initialisation to write (default: ilsvrc-nets/)")
    args = p.parse_args(argv)
    out, _ = make_fcn_init(args.backbone, args.proto, args.weights, args.out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
