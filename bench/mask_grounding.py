"""Where the Mixing Network's mask looks, for a trained ``fmn.pt``: a table, a picture and JSON.

    python -m bench.mask_grounding artifacts/synthetic/fmn.pt --synthetic data/synthetic
    python -m bench.mask_grounding runs/cuhk01/fmn.pt --dataset cuhk01 --root /data/CUHK01/campus

On the synthetic data (``--synthetic``): the grounding ratio per local detail
(fmn_core.analysis.mask_grounding) for the trained MN and an untrained one,
and the average relative mask (mask / its image's mean) over the images for
which each detail tells the identity from its group mates, with the detail's
band outlined. On any other dataset: the average mask over the test images
and its variation (standard deviation across images of the relative mask).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from bench.ablation import machine  # the bench scripts share how they name the machine
from fmn_core.analysis.mask_grounding import (
    DETAIL_BANDS,
    grounding_markdown,
    grounding_of_checkpoint,
    predict_masks,
)
from fmn_core.engine.checkpoint import load_checkpoint, model_from_checkpoint


def plot_detail_masks(learned, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    details = [d for d in DETAIL_BANDS if learned.images[d]]
    figure, axes = plt.subplots(1, len(details), figsize=(1.6 * len(details), 3.2), squeeze=False)
    top = max(float(learned.mean_mask[d].max()) for d in details)
    for axis, detail in zip(axes[0], details, strict=True):
        image = axis.imshow(learned.mean_mask[detail], cmap="magma", vmin=1 / top, vmax=top)
        axis.contour(learned.mean_region[detail], levels=[0.5], colors="cyan", linewidths=0.8)
        axis.set_title(f"{detail}\n{learned.ratio[detail]:.2f} (n={learned.images[detail]})", fontsize=8)
        axis.set_xticks([])
        axis.set_yticks([])
    figure.colorbar(image, ax=axes[0].tolist(), fraction=0.04, label="mask / image mean")
    figure.savefig(out, dpi=120, bbox_inches="tight", metadata={"Software": "fmn"})
    plt.close(figure)


def plot_mean_mask(mean: np.ndarray, std: np.ndarray, out: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(3.6, 3.4))
    for axis, values, name in zip(axes, (mean, std), ("mean", "std across images"), strict=True):
        shown = axis.imshow(values, cmap="magma")
        axis.set_title(name, fontsize=8)
        axis.set_xticks([])
        axis.set_yticks([])
        figure.colorbar(shown, ax=axis, fraction=0.08)
    figure.suptitle(title, fontsize=8)
    figure.savefig(out, dpi=120, bbox_inches="tight", metadata={"Software": "fmn"})
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", type=Path, help="a trained fmn.pt")
    parser.add_argument("--synthetic", type=Path, help="the synthetic dataset folder the model was trained on")
    parser.add_argument("--dataset", help="another dataset's reader name (with --root)")
    parser.add_argument("--root", type=Path)
    parser.add_argument("--max-images", type=int, default=None)
    parser.add_argument("--out", type=Path, default=Path("bench/results/mask_grounding"))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.synthetic:
        measured = grounding_of_checkpoint(str(args.checkpoint), str(args.synthetic), max_images=args.max_images)
        if measured is None:
            parser.error(f"{args.checkpoint} has a constant mask: it looks nowhere")
        learned, untrained = measured
        table = grounding_markdown(learned, untrained)
        shared = grounding_of_checkpoint(str(args.checkpoint), str(args.synthetic), max_images=args.max_images,
                                         shared=True)
        table += "\n\nControl: the same details where every group mate shares them (they tell no one apart):\n\n"
        table += grounding_markdown(*shared)
        plot_detail_masks(learned, args.out / "synthetic_detail_masks.png")
        result = {"dataset": "synthetic", "checkpoint": str(args.checkpoint), "machine": machine(),
                  "learned": learned.to_dict(), "untrained": untrained.to_dict(),
                  "learned_shared": shared[0].to_dict(), "untrained_shared": shared[1].to_dict(), "markdown": table}
        (args.out / "synthetic.json").write_text(json.dumps(result, indent=1))
        print(table)
        return 0
    if not (args.dataset and args.root):
        parser.error("give --synthetic, or --dataset and --root")
    from fmn_core.data import read_dataset

    table = read_dataset(args.dataset, args.root).table
    test = table[table.split.isin(["query", "gallery"])]
    paths = test.path.tolist()[:: max(1, len(test) // args.max_images)] if args.max_images else test.path.tolist()
    state = load_checkpoint(args.checkpoint)
    masks = predict_masks(model_from_checkpoint(state, source=str(args.checkpoint)), paths)
    relative = masks / masks.mean(axis=(1, 2), keepdims=True)
    mean, std = relative.mean(axis=0), relative.std(axis=0)
    plot_mean_mask(mean, std, args.out / f"{args.dataset}_mean_mask.png",
                   f"{args.dataset}: {len(paths)} test images")
    rows = mean.shape[0]
    thirds = {part: float(mean[slice(*bounds)].mean()) for part, bounds in
              (("top third", (0, rows // 3)), ("middle third", (rows // 3, 2 * rows // 3)),
               ("bottom third", (2 * rows // 3, rows)))}
    result = {"dataset": args.dataset, "checkpoint": str(args.checkpoint), "machine": machine(),
              "images": len(paths), "variation_across_images": float(std.mean()),
              "spatial_contrast_of_mean": float(mean.std() / mean.mean()), "mean_by_height": thirds,
              "raw_mask_mean": float(masks.mean()), "raw_mask_max": float(masks.max())}
    (args.out / f"{args.dataset}.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
