"""Training entry point behind every model directory's solve.py.

The training loop (surgery-initialised weights, scoring on the evaluation split,
snapshots, progress) is not implemented yet; until it is, solve.py says so.
"""
import sys
from pathlib import Path


def main(model_dir, argv):
    name = Path(model_dir).name
    print(f"{name}/solve.py: training is not implemented yet; the nets of {name}/ are "
          f"ready (train/val/deploy prototxts, solver.prototxt)", file=sys.stderr)
    return 2
