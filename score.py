"""Score a model on a split: the paper's pixel accuracy, mean accuracy, mean IU and
frequency-weighted IU, and per-class IU (fcn/metrics.py defines them).

    python score.py MODEL_DIR --weights W [--split S] [--data-root R]
                    [--save-dir D] [--json] [--gpu N | --cpu]

Classes with no ground truth in the scored images are left out of the means (NaN,
null in JSON), as the paper does for SIFT Flow. --save-dir writes each prediction
as a palette PNG named by its image, never among the dataset's files (nor in the
data root or a folder above it) nor over a file the project did not write.
"""
import argparse
import contextlib
import json
import sys
from pathlib import Path

from fcn import caffemodel, cli, files, metrics, visual, zoo
from fcn.datasets import DATASETS, checked_root, head_classes
from fcn.device import use_device
from fcn.errors import UserError


def check_save_dir(save_dir, model, root):
    """--save-dir may not be the data root, nor a folder that holds it, nor inside the
    evaluation dataset's folders."""
    if files.inside(root, save_dir):
        raise UserError(f"--save-dir {save_dir} is or holds the data root {root}; "
                            "predictions never go among the data: choose another --save-dir")
    dataset = DATASETS[model.eval.dataset]
    for folder in {root / dataset.dir, root / dataset.extra.get("context_dir", dataset.dir)}:
        if files.inside(save_dir, folder):
            raise UserError(f"--save-dir {save_dir} is inside the dataset folder "
                                f"{folder}; predictions never go among the data: choose "
                                "another --save-dir")


def main(argv=None):
    p = argparse.ArgumentParser(prog="score.py", description="Score a model on a split.")
    p.add_argument("model", metavar="MODEL_DIR", help="a model directory, e.g. voc-fcn8s")
    p.add_argument("--weights", required=True, help="caffemodel to score")
    p.add_argument("--split", help="split to score (default: the model's evaluation split)")
    cli.add_data_root_flag(p)
    p.add_argument("--save-dir", help="also write each prediction as a palette PNG here")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    cli.add_device_flags(p)
    args = p.parse_args(argv)
    device = use_device(args.gpu, args.cpu)

    model = zoo.model_from_arg(args.model)
    weights = Path(args.weights)
    save_dir = cli.output_dir(args.save_dir, "--save-dir") if args.save_dir else None
    caffemodel.read_shapes(weights)          # missing / damaged: one line, before any work
    split = args.split or model.eval.split
    root = checked_root(args.data_root, [(model.eval.dataset, split)])
    proto = model.data_net("eval", split, root)
    if save_dir is not None:
        check_save_dir(save_dir, model, root)
    print(device, file=sys.stderr if args.json else sys.stdout, flush=True)
    net = caffemodel.load_net(proto, weights)
    ids = net.layers[0].ids
    with contextlib.ExitStack() as held:
        if save_dir is not None:
            held.enter_context(files.locked(save_dir, "--save-dir"))
            for id_ in ids:
                for _, _, _, suffix in metrics.heads_of(model):
                    files.check_replaceable(save_dir / f"{Path(id_).stem}{suffix}.png",
                                            "--save-dir", ours=visual.written_by_us)
        results, _ = metrics.score_net(net, model, len(ids), save_dir,
                                       None if args.json else metrics.progress_lines(sys.stderr))
    first = results[model.heads[0].label]
    if args.json:
        out = {**first, "n_images": len(ids), "split": split, "model": model.name,
               "weights": str(weights)}
        if len(results) > 1:
            out["heads"] = results
        print(json.dumps(metrics.json_safe(out)))
        return 0
    print(f"{model.name} on {split} ({len(ids)} images, {weights}):")
    for h in model.heads:
        name = f" [{h.label}]" if len(model.heads) > 1 else ""
        print(f"{name.strip() or ' '} " + metrics.format_metrics(
            results[h.label], head_classes(model.eval.dataset, h.label)))
    if save_dir is not None:
        print(f"predictions written to {save_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(cli.run(main))
