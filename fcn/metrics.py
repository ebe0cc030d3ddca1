"""Scoring segmentation: confusion histograms and the paper's four metrics, a net
scored over a split, and the metrics as a line of text.

Metrics (the paper's section 5, from a confusion histogram n[i, j] = pixels of
class i predicted as j, over all scored images): pixel accuracy sum_i n_ii /
sum_ij n_ij; mean accuracy mean_i n_ii / t_i; mean IU mean_i n_ii / (t_i +
sum_j n_ji - n_ii); frequency weighted IU sum_i t_i IU_i / sum_i t_i, with t_i =
sum_j n_ij. Classes with no ground-truth pixels in the scored images are left out
of the means (their accuracy and IU are NaN; null in JSON): that is how the paper
excludes the three SIFT Flow classes absent from its test set. Pixels labelled 255
(or any value outside the classes) are not scored.
"""
import time
from pathlib import Path

import numpy as np

from fcn import visual
from fcn.progress import say

METRIC_KEYS = ("pixel_accuracy", "mean_accuracy", "mean_iu", "fw_iu")
METRIC_NAMES = {"pixel_accuracy": "pixel acc", "mean_accuracy": "mean acc",
                "mean_iu": "mean IU", "fw_iu": "f.w. IU", "geo_accuracy": "geo acc"}


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


def score_net(net, model, n_images, save_dir=None, progress=None):
    """Run ``net`` (an evaluation net of ``model`` whose first layer is our data layer)
    over ``n_images``: ({label top: metrics of that head}, mean loss or None). With
    ``save_dir``, each prediction is written there as a palette PNG named by its
    image (and head)."""
    heads = heads_of(model)
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
    results = {label: metrics(hists[score]) for score, label, _, _ in heads}
    return results, (loss_sum / n_images if losses and n_images else None)


def progress_lines(stream=None, every=50):
    """A progress(i, total) for score_net: '  i/total images, s each' every ``every``
    images and at the end."""
    t0 = time.time()

    def progress(i, total):
        if i % every == 0 or i == total:
            say(f"  {i}/{total} images, {(time.time() - t0) / i:.2f} s each", stream)
    return progress


def format_metrics(m, classes=None):
    line = ", ".join(f"{METRIC_NAMES[k]} {100 * m[k]:.2f}" for k in METRIC_KEYS)
    if classes is None:
        return line
    per = ", ".join(f"{c} {100 * v:.1f}" for c, v in zip(classes, m["per_class_iu"])
                    if v == v)
    return f"{line}\n  per-class IU: {per}"
