"""Score segmentation: confusion histograms and the paper's four metrics.

    python score.py MODEL_DIR --weights W [--split S] [--data-root R]
                    [--save-dir D] [--json]

Metrics (the paper's section 5, from a confusion histogram n[i, j] = pixels of
class i predicted as j, over all scored images): pixel accuracy sum_i n_ii /
sum_ij n_ij; mean accuracy mean_i n_ii / t_i; mean IU mean_i n_ii / (t_i +
sum_j n_ji - n_ii); frequency weighted IU sum_i t_i IU_i / sum_i t_i, with t_i =
sum_j n_ij. Classes with no ground-truth pixels in the scored images are left
out of the means (their accuracy and IU are NaN; null in JSON): that is how the
paper excludes the three SIFT Flow classes absent from its test set. Pixels
labelled 255 (or any value outside the classes) are not scored.
"""
import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

import cli  # (first: quiet Caffe logging before caffe loads)
import files
import visual
import numpy as np

METRIC_KEYS = ("pixel_accuracy", "mean_accuracy", "mean_iu", "fw_iu")
METRIC_NAMES = {"pixel_accuracy": "pixel acc", "mean_accuracy": "mean acc",
                "mean_iu": "mean IU", "fw_iu": "f.w. IU"}


# ---------------------------------------------------------------------------
# Metrics: pure numpy


def fast_hist(label, pred, n):
    """n x n confusion histogram: rows are ground truth, columns predictions."""
    label = np.asarray(label).ravel()
    pred = np.asarray(pred).ravel()
    k = (label >= 0) & (label < n)
    return np.bincount(n * label[k].astype(np.int64) + pred[k].astype(np.int64),
                       minlength=n * n).reshape(n, n)


def _nanmean(a):
    a = np.asarray(a, dtype=np.float64)
    return float(np.mean(a[np.isfinite(a)])) if np.isfinite(a).any() else float("nan")


def metrics(hist):
    """The four metrics and per-class IU of a confusion histogram."""
    hist = np.asarray(hist, dtype=np.float64)
    tp, gt, pred = np.diag(hist), hist.sum(1), hist.sum(0)
    total = hist.sum()
    present = gt > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        acc = np.where(present, tp / gt, np.nan)
        iu = np.where(present, tp / (gt + pred - tp), np.nan)
    freq = gt / total if total else np.zeros_like(gt)
    return {
        "pixel_accuracy": float(tp.sum() / total) if total else float("nan"),
        "mean_accuracy": _nanmean(acc),
        "mean_iu": _nanmean(iu),
        "fw_iu": float((freq[present] * iu[present]).sum()) if total else float("nan"),
        "per_class_iu": [float(v) for v in iu],
    }


def json_safe(obj):
    """NaN -> null, recursively, so the output is strict JSON."""
    if isinstance(obj, float):
        return None if obj != obj else obj
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


# ---------------------------------------------------------------------------
# Scoring a net


def heads_of(model):
    """[(score blob, label blob, classes, suffix)] of a model of the zoo."""
    return [("score" + h.suffix, h.label, h.num_classes, h.suffix) for h in model.heads]


def score_net(net, heads, n_images, save_dir=None, progress=None):
    """Run ``net`` (an evaluation net whose first layer is our data layer) over
    ``n_images`` and return ({score blob: histogram}, mean loss or None)."""
    hists = {s: np.zeros((c, c), np.int64) for s, _, c, _ in heads}
    losses = [b for b in net.outputs if b.startswith("loss")]
    loss_sum = 0.0
    data_layer = net.layers[0]
    for i in range(n_images):
        net.forward()
        for score, label, c, suffix in heads:
            pred = net.blobs[score].data[0].argmax(axis=0)
            hists[score] += fast_hist(net.blobs[label].data[0, 0].astype(np.int64), pred, c)
            if save_dir is not None:
                stem = Path(getattr(data_layer, "last_id", f"{i:06d}")).stem
                visual.save_label_png(Path(save_dir) / f"{stem}{suffix}.png", pred)
        loss_sum += sum(float(net.blobs[b].data) for b in losses)
        if progress:
            progress(i + 1, n_images)
    return hists, (loss_sum / n_images if losses and n_images else None)


def format_metrics(m, classes=None):
    line = ", ".join(f"{METRIC_NAMES[k]} {100 * m[k]:.2f}" for k in METRIC_KEYS)
    if classes is None:
        return line
    per = ", ".join(f"{c} {100 * v:.1f}" for c, v in zip(classes, m["per_class_iu"])
                    if v == v)
    return f"{line}\n  per-class IU: {per}"


# ---------------------------------------------------------------------------
# CLI


def main(argv=None):
    p = argparse.ArgumentParser(prog="score.py", description="Score a model on a split.")
    p.add_argument("model", metavar="MODEL_DIR", help="a model directory, e.g. voc-fcn8s")
    p.add_argument("--weights", required=True, help="caffemodel to score")
    p.add_argument("--split", help="split to score (default: the model's evaluation split)")
    p.add_argument("--data-root", help="data root (default: $FCN_DATA, else data/)")
    p.add_argument("--save-dir", help="also write each prediction as a palette PNG here")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    cli.add_device_flags(p)
    args = p.parse_args(argv)
    device = cli.use_device(args.gpu, args.cpu)

    import caffemodel
    import surgery
    from datasets import DATASETS, head_classes
    import nets
    model = nets.model_from_arg(args.model)
    weights = Path(args.weights)
    save_dir = cli.output_dir(args.save_dir, "--save-dir") if args.save_dir else None
    caffemodel.read_shapes(weights)          # missing / damaged: one line, before any work
    proto = model.data_net("eval", args.split, args.data_root)
    params = json.loads(proto.layer[0].python_param.param_str)
    split, root = params["split"], Path(params["data_root"])
    if save_dir is not None:
        dataset = DATASETS[model.eval.dataset]
        for folder in {root / dataset.dir, root / dataset.extra.get("context_dir", dataset.dir)}:
            if files.inside(save_dir, folder):
                raise cli.UserError(f"--save-dir {save_dir} is inside the dataset folder "
                                    f"{folder}; predictions never go among the data: choose "
                                    "another --save-dir")
    print(device, file=sys.stderr if args.json else sys.stdout, flush=True)
    net = surgery.load_net(proto, weights)
    n = len(net.layers[0].ids)
    with contextlib.ExitStack() as held:
        if save_dir is not None:
            held.enter_context(files.locked(save_dir, "--save-dir"))
            for id_ in net.layers[0].ids:
                for _, _, _, suffix in heads_of(model):
                    files.check_replaceable(save_dir / f"{Path(id_).stem}{suffix}.png",
                                            "--save-dir", ours=visual.written_by_us)
        hists, loss = score_run(net, model, n, save_dir, args.json)
    results = {}
    for score, label, c, suffix in heads_of(model):
        results[label] = metrics(hists[score])
    first = results[model.heads[0].label]
    if args.json:
        out = {**first, "n_images": n, "split": split, "model": model.name,
               "weights": str(weights)}
        if len(results) > 1:
            out["heads"] = results
        print(json.dumps(json_safe(out)))
        return 0
    print(f"{model.name} on {split} ({n} images, {weights}):")
    for h in model.heads:
        name = f" [{h.label}]" if len(model.heads) > 1 else ""
        print(f"{name.strip() or ' '} " + format_metrics(
            results[h.label], head_classes(model.eval.dataset, h.label)))
    if save_dir is not None:
        print(f"predictions written to {save_dir}")
    return 0


def score_run(net, model, n, save_dir, quiet):
    """score_net with a progress line every 50 images on stderr (none when ``quiet``)."""
    t0 = time.time()

    def progress(i, total):
        if not quiet and (i % 50 == 0 or i == total):
            print(f"  {i}/{total} images, {(time.time() - t0) / i:.2f} s each",
                  file=sys.stderr, flush=True)
    return score_net(net, heads_of(model), n, save_dir, progress)


if __name__ == "__main__":
    sys.exit(cli.run(main))
