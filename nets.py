"""Regenerate the model zoo's files: every model directory (voc-fcn32s/,
nyud-fcn32s-color-hha/, siftflow-fcn8s/, ...) and ilsvrc-nets/, from the zoo table
(fcn/zoo.py) and the builder (fcn/builder.py). Each model directory's net.py calls it.

    python nets.py                 regenerate every directory
    python nets.py voc-fcn8s ...   regenerate those directories
    python nets.py --check         exit 1 if any committed file differs from the builder
"""
import sys

from fcn import cli, zoo


def main(argv=None):
    """python nets.py [--check] [MODEL_DIR ...]; also what every net.py calls."""
    return cli.run(zoo.generate, argv, prog="nets.py")


if __name__ == "__main__":
    sys.exit(main())
