"""Regenerate the model zoo's files: every model directory (voc-fcn32s/,
nyud-fcn32s-color-hha/, siftflow-fcn8s/, ...) and ilsvrc-nets/, from the zoo table
(fcn/zoo.py) and the builder (fcn/builder.py); fcn/generate.py writes them.

    python nets.py                 regenerate every directory
    python nets.py voc-fcn8s ...   regenerate those directories
    python nets.py --check         exit 1 if any committed file differs from the builder
"""
import argparse
import sys

from fcn import cli, generate, zoo


def main(argv=None):
    p = argparse.ArgumentParser(prog="nets.py", description=__doc__.split("\n")[0])
    p.add_argument("dirs", nargs="*", metavar="DIR",
                   help="model directories, or ilsvrc-nets (default: all)")
    p.add_argument("--check", action="store_true",
                   help="write nothing; list the files that differ, exit 1 if any")
    args = p.parse_args(argv)
    names = [zoo.model_from_arg(d).name if d.rstrip("/") != "ilsvrc-nets" else "ilsvrc-nets"
             for d in args.dirs]
    return generate.regenerate(names, args.check)


if __name__ == "__main__":
    sys.exit(cli.run(main, prog="nets.py"))
