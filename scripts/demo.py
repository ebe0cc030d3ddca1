"""make demo: the FCN method end to end on a CPU, on real data.

1. decode the ImageNet-trained SqueezeNet v1.0 (Deep Compression) into a caffemodel
   and check it on the shared photos;
2. cast it into an FCN by surgery (the classifier's convolutions kept, its 1000-way
   classifier dropped, an 11-way score layer at zero, bilinear upsampling);
3. fine-tune camvid-fcn8s-squeezenet on CamVid train for a fixed number of
   iterations (the same result on a fast or a slow CPU; the time it will take is
   measured over the first iterations and printed);
4. score CamVid val, and write overlays (with a legend) for a few val images.

Everything goes to out/demo/. Data: layers.data_root (holding CamVid and SqueezeNet).

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

import cli  # noqa: E402  (quiet Caffe logging before caffe loads)


def main(argv=None):
    p = argparse.ArgumentParser(prog="demo.py", description=__doc__.split("\n")[0])
    p.add_argument("--iters", type=int, default=2000, help="fine-tuning iterations")
    p.add_argument("--model", default="camvid-fcn8s-squeezenet")
    p.add_argument("--overlays", type=int, default=4, help="val images to segment")
    p.add_argument("--test-interval", type=int, default=500, help="score val this often")
    p.add_argument("--out", default=str(REPO / "out" / "demo"))
    args = p.parse_args(argv)
    for flag in ("iters", "overlays", "test_interval"):
        if getattr(args, flag) < 1:
            raise cli.UserError(f"--{flag.replace('_', '-')} must be at least 1")

    import infer
    import nets
    import visual
    import squeezenet
    import surgery
    import training
    t0 = time.time()
    data = squeezenet.cpu_scale_data()
    model = nets.MODELS[args.model]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"demo: data from {data}; output in {out}")

    print("1/4 decoding SqueezeNet v1.0 (ImageNet) ...")
    weights = out / "squeezenet_v1.0.caffemodel"
    nnz, total = squeezenet.decode_to_caffemodel(data / "squeezenet", weights)
    photos = sorted((data / "photos").glob("*.bmp"))
    if photos:
        names = (data / "photos/imagenet_labels.txt").read_text().splitlines()[1:]
        for path, best in squeezenet.classify(weights, photos, top=1):
            print(f"    {path.name}: {names[best[0][0]]}")

    print("2/4 surgery: classifier -> FCN initialisation ...")
    init, _ = surgery.make_fcn_init(model.backbone, weights=weights,
                                    out=out / "squeezenet-fcn.caffemodel")

    print(f"3/4 fine-tuning {model.name} on CamVid train for {args.iters} iterations ...")
    run = out / "train"
    if run.exists():
        shutil.rmtree(run)
    rc = training.train(model.name, ["--weights", str(init), "--iters", str(args.iters),
                                     "--test-interval", str(args.test_interval),
                                     "--display", "50", "--data-root", str(data),
                                     "--out", str(run)])
    if rc:
        return rc
    record = training.read_jsonl(run / "metrics.jsonl")[-1]
    shutil.copyfile(run / "progress.png", out / "progress.png")

    print(f"4/4 overlays of {args.overlays} val images ...")
    seg = infer.Segmenter(model, run / "final.caffemodel")
    from datasets import DATASETS
    import layers
    from PIL import Image
    reader = layers.CamVidReader(data / "camvid")
    classes = DATASETS["camvid"].classes
    (out / "overlays").mkdir(exist_ok=True)
    for id_ in reader.ids("val")[:args.overlays]:
        rgb = reader.raw(id_, "data")
        label = seg(rgb)["score"]
        stem = Path(id_).stem
        Image.fromarray(visual.overlay(rgb, label, None, classes)).save(
            out / "overlays" / f"{stem}_overlay.jpg", quality=90)
        print(f"    {stem}: {visual.describe(label, classes)}")

    result = {"model": model.name, "init": "SqueezeNet v1.0 (ImageNet), by surgery",
              "iterations": record["iter"], "training_minutes": round(record["elapsed_s"] / 60, 1),
              "split": "val", "n_images": record["n_images"],
              **{k: record[k] for k in ("pixel_accuracy", "mean_accuracy", "mean_iu", "fw_iu")},
              "per_class_iu": dict(zip(classes, record["per_class_iu"])),
              "total_minutes": round((time.time() - t0) / 60, 1)}
    (out / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"demo done in {result['total_minutes']} minutes: {model.name} after "
          f"{record['iter']} iterations scores mean IU {100 * record['mean_iu']:.1f}, pixel "
          f"accuracy {100 * record['pixel_accuracy']:.1f} on CamVid val ({record['n_images']} images)")
    print(f"  metrics:  {out / 'metrics.json'}")
    print(f"  plot:     {out / 'progress.png'}")
    print(f"  overlays: {out / 'overlays'}/")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main, prog="make demo"))
