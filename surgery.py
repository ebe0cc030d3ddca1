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

from fcn import cli, zoo
from fcn.initial import make_fcn_init
from fcn.surgery import (SurgeryError, color_depth_conv1, deconvolutions,  # noqa: F401
                         expand_score, interp, transplant, transplant_summary, upsample_filt)


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
