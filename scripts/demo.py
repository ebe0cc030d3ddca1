"""make demo: the FCN method end to end on a CPU, on real data.

1. decode the ImageNet-trained SqueezeNet v1.0 (Deep Compression) into a caffemodel
   and check it on the shared photos;
2. cast it into an FCN by surgery (the classifier's convolutions kept, its 1000-way
   classifier dropped, an 11-way score layer at zero, bilinear upsampling);
3. fine-tune camvid-fcn8s-squeezenet on CamVid train for a fixed number of
   iterations (the same result on a fast or a slow CPU; the time it will take is
   measured over the first iterations and printed);
4. score CamVid val, and write overlays (with a legend) for a few val images.

Everything goes to out/demo/. Data: fcn.datasets.data_root (holding CamVid and
SqueezeNet).

    python scripts/demo.py [--iters 2000] [--model camvid-fcn8s-squeezenet] [--overlays 4]
"""
import argparse
import json
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from fcn import cli, files, squeezenet, train, visual, zoo  # noqa: E402
from fcn.initial import squeezenet_fcn  # noqa: E402
from fcn.segmenter import Segmenter  # noqa: E402
from fcn.datasets import DATASETS  # noqa: E402
from fcn.device import use_device  # noqa: E402
from fcn.paths import OUT  # noqa: E402
from fcn.errors import UserError  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(prog="demo.py", description=__doc__.split("\n")[0])
    p.add_argument("--iters", type=int, default=2000, help="fine-tuning iterations")
    p.add_argument("--model", default="camvid-fcn8s-squeezenet")
    p.add_argument("--overlays", type=int, default=4, help="val images to segment")
    p.add_argument("--test-interval", type=int, default=500, help="score val this often")
    p.add_argument("--out", default=str(OUT / "demo"))
    cli.add_device_flags(p)
    args = p.parse_args(argv)
    for flag in ("iters", "overlays", "test_interval"):
        if getattr(args, flag) < 1:
            raise UserError(f"--{flag.replace('_', '-')} must be at least 1")

    if args.model not in zoo.MODELS or zoo.MODELS[args.model].backbone != "squeezenet":
        raise UserError(f"--model {args.model}: the demo trains one of "
                            + ", ".join(m for m, v in zoo.MODELS.items()
                                        if v.backbone == "squeezenet"))
    device = use_device(args.gpu, args.cpu)
    data = squeezenet.cpu_scale_data()
    out = cli.output_dir(Path(args.out).resolve(), "--out")
    with files.locked(out, "--out"):
        files.claim_folder(out, "--out", "make demo")
        return demo(args, zoo.MODELS[args.model], data, out, device)


def demo(args, model, data, out, device):
    """The four steps, once the arguments, the data and the output folder are checked."""
    t0 = time.time()
    print(f"demo: data from {data}; output in {out}; {device}")

    print("1/4 decoding SqueezeNet v1.0 (ImageNet), then 2/4 surgery: classifier -> FCN "
          "initialisation ...")
    weights = out / "squeezenet_v1.0.caffemodel"
    init, _ = squeezenet_fcn(data / "squeezenet", weights, out / "squeezenet-fcn.caffemodel")
    photos = sorted((data / "photos").glob("*.bmp"))
    if photos:
        names = (data / "photos/imagenet_labels.txt").read_text().splitlines()[1:]
        for path, best in squeezenet.classify(weights, photos, top=1):
            print(f"    {path.name}: {names[best[0][0]]}")

    print(f"3/4 fine-tuning {model.name} on CamVid train for {args.iters} iterations ...")
    run = out / "train"
    if run.exists():
        shutil.rmtree(run)
    result = train.run(model, train.Options(
        weights=str(init), iters=args.iters, test_interval=args.test_interval, display=50,
        data_root=str(data), out=str(run), device=device))
    if result.exit_code:
        return result.exit_code
    record = files.read_jsonl(run / "metrics.jsonl")[-1]
    files.write_atomic(out / "progress.png",
                       lambda tmp: shutil.copyfile(run / "progress.png", tmp))

    print(f"4/4 overlays of {args.overlays} val images ...")
    seg = Segmenter(model, run / "final.caffemodel", device)
    camvid = DATASETS["camvid"]
    reader, classes = camvid.open(data), camvid.classes
    (out / "overlays").mkdir(exist_ok=True)
    for id_ in reader.ids("val")[:args.overlays]:
        rgb = reader.raw(id_, "data")
        label = seg(rgb)["score"]
        stem = Path(id_).stem
        visual.save_jpeg(out / "overlays" / f"{stem}_overlay.jpg",
                         visual.overlay(rgb, label, None, classes))
        print(f"    {stem}: {visual.describe(label, classes)}")

    result = {"model": model.name, "init": "SqueezeNet v1.0 (ImageNet), by surgery",
              "iterations": record["iter"], "training_minutes": round(record["elapsed_s"] / 60, 1),
              "split": "val", "n_images": record["n_images"],
              **{k: record[k] for k in ("pixel_accuracy", "mean_accuracy", "mean_iu", "fw_iu")},
              "per_class_iu": dict(zip(classes, record["per_class_iu"])),
              "total_minutes": round((time.time() - t0) / 60, 1), "device": device.record()}
    files.write_atomic(out / "metrics.json",
                       lambda tmp: tmp.write_text(json.dumps(result, indent=2) + "\n"))
    print(f"demo done in {result['total_minutes']} minutes: {model.name} after "
          f"{record['iter']} iterations scores mean IU {100 * record['mean_iu']:.1f}, pixel "
          f"accuracy {100 * record['pixel_accuracy']:.1f} on CamVid val ({record['n_images']} images)")
    print(f"  metrics:  {out / 'metrics.json'}")
    print(f"  plot:     {out / 'progress.png'}")
    print(f"  overlays: {out / 'overlays'}/")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main, prog="make demo"))
