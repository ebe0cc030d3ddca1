"""Segment images with a model of the zoo.

    python infer.py IMAGE_OR_DIR... [--model voc-fcn8s] [--weights W] [--out DIR]
                    [--gpu N | --cpu]

For each image writes <stem>.png (a palette PNG of class indices, VOC colours)
and <stem>_overlay.jpg (the image with the classes blended in), and prints the
time taken and the classes found with their share of pixels. Any size and mode:
greyscale, RGBA, 16-bit and palette images are converted to RGB, and the EXIF
orientation is applied. The net is built once and reshaped only when the image
size changes. Images too large for this machine's memory (or the GPU's, or
Caffe's per-blob limit) are refused with their size and the limit.
"""
import argparse
import sys
import time
from pathlib import Path

from fcn import cli, files, visual, zoo
from fcn.datasets import head_classes
from fcn.segmenter import Segmenter, default_weights
from fcn.device import use_device
from fcn.errors import FcnError, UserError
from fcn.paths import OUT

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm",
              ".pgm", ".pbm"}


def expand_inputs(paths):
    """Files as given; folders -> their image files (sorted, not recursive)."""
    out = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_EXTS)
            if not found:
                raise UserError(f"{p} is a folder with no images "
                                    f"({', '.join(sorted(IMAGE_EXTS))})")
            out += found
        else:
            out.append(p)
    return out


def output_names(model, path):
    """The files infer.py writes for one input: a label PNG per head, then the overlay."""
    stem = Path(path).stem
    return [f"{stem}{h.suffix if h is not model.heads[0] else ''}.png" for h in model.heads] \
        + [f"{stem}_overlay.jpg"]


def check_outputs(model, paths, out, weights):
    """Before any work: no two inputs may write the same file, and no output may be
    one of the inputs or a file infer.py did not write (files.check_replaceable)."""
    claimed = {}
    for path in paths:
        for name in output_names(model, path):
            target = (out / name).resolve()
            if target in claimed and claimed[target] != path:
                raise UserError(f"{claimed[target]} and {path} would both be written to "
                                    f"{out / name}; segment them into different --out folders")
            files.check_replaceable(out / name, "--out", inputs=[*paths, weights],
                                    ours=visual.written_by_us)
            claimed[target] = path


def main(argv=None):
    p = argparse.ArgumentParser(prog="infer.py", description="Segment images.")
    p.add_argument("images", nargs="+", metavar="IMAGE_OR_DIR")
    p.add_argument("--model", default="voc-fcn8s", help="a model directory (default voc-fcn8s)")
    p.add_argument("--weights", help="caffemodel (default: the model's released weights)")
    p.add_argument("--out", help="output folder (default: out/infer/<model>)")
    cli.add_device_flags(p)
    args = p.parse_args(argv)
    device = use_device(args.gpu, args.cpu)
    model = zoo.model_from_arg(args.model)
    weights = Path(args.weights) if args.weights else default_weights(model)
    paths = expand_inputs(args.images)
    wanted = Path(args.out or OUT / "infer" / model.name)
    made = not wanted.exists()
    out = cli.output_dir(wanted, "--out")
    try:
        with files.locked(out, "--out"):
            check_outputs(model, paths, out, weights)
            return segment(model, weights, paths, out, device)
    finally:
        if made and out.is_dir() and not any(out.iterdir()):
            out.rmdir()                 # a run that wrote nothing leaves no folder it made


def segment(model, weights, paths, out, device):
    """Every image, once the arguments and outputs are checked and --out is held."""
    print(device, flush=True)
    seg = Segmenter(model, weights, device)
    classes = {h.suffix: head_classes(model.eval.dataset, h.label) for h in model.heads}
    first_classes = classes[model.heads[0].suffix]
    bg = first_classes.index("background") if "background" in first_classes else None
    failed = 0
    for path in paths:
        t = time.time()
        try:
            rgb = seg.load(path)
        except FcnError as e:
            print(f"infer.py: {e}", file=sys.stderr)
            failed += 1
            continue
        labels = seg(rgb)
        names = output_names(model, path)
        for hd, name in zip(model.heads, names):
            visual.save_label_png(out / name, labels["score" + hd.suffix])
        first = labels["score" + model.heads[0].suffix]
        visual.save_jpeg(out / names[-1], visual.overlay(rgb, first, bg, first_classes))
        found = "; ".join(f"{visual.describe(labels['score' + hd.suffix], classes[hd.suffix])}"
                          for hd in model.heads)
        print(f"{path}: {rgb.shape[1]}x{rgb.shape[0]}, {time.time() - t:.2f} s: {found}",
              flush=True)
    print(f"wrote {len(paths) - failed} segmentations to {out}")
    return 2 if failed else 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
