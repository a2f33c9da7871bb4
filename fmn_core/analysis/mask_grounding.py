"""Where the mask looks: does the Mixing Network weight the local details that tell group mates apart?

The synthetic data records, for every identity, its local details (bag, shoes,
chest logo, hat, belt, sleeve stripes) and its group, whose members share the
global look exactly; and for every image the person box and the view. A detail
is *discriminative* for an identity when at least one group mate has another
one. Each detail lies in a band of the person box (``BODY_LAYOUT``).

For one image with mask ``m`` (values >= 1) the *excess* is ``m - 1``: what the
MN adds over a constant mask. For a detail region R::

    grounding(R) = (share of the excess inside R) / (share of the image's area inside R)

1.0 means no preference, above 1 that the MN puts more than its share on the
region. Reported per detail type as the mean over the test images for which
that detail is discriminative (the chest logo only on front views, where it is
visible), for the trained MN and, as the reference, for an untrained one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from fmn_core.data.loading import CachedBatches, ImageCache
from fmn_core.models.fmn import FeatureMaskNetwork
from fmn_core.utils.errors import FMNInputError

#: detail type -> the BODY_LAYOUT bands (of the person box, top to bottom) it is drawn in
DETAIL_BANDS: dict[str, tuple[str, ...]] = {
    "bag": ("torso", "hips"), "shoes": ("shoes",), "logo": ("chest_logo",), "hat": ("head",),
    "belt": ("hips",), "stripes": ("torso",),
}
#: detail type -> the keys of an identity's ``local`` record that define it
DETAIL_KEYS: dict[str, tuple[str, ...]] = {
    "bag": ("bag", "bag_color", "bag_side"), "shoes": ("shoe_color",), "logo": ("logo", "logo_color"),
    "hat": ("hat_color",), "belt": ("belt_color",), "stripes": ("stripe_color",),
}
#: details that only show from some views
VISIBLE_FROM: dict[str, tuple[str, ...]] = {"logo": ("front",)}


def discriminative_details(identity: Mapping[str, Any], mates: Sequence[Mapping[str, Any]]) -> set[str]:
    """The detail types in which ``identity`` differs from at least one of its group mates."""
    mine = identity["local"]
    return {detail for detail, keys in DETAIL_KEYS.items()
            if any(tuple(mine[k] for k in keys) != tuple(mate["local"][k] for k in keys) for mate in mates)}


def region_grid(box: Sequence[float], image_size: tuple[int, int], bands: Sequence[tuple[float, float]],
                grid: tuple[int, int]) -> np.ndarray:
    """Cells of an ``grid`` mask whose centre lies in the person box's vertical ``bands`` (box in pixels)."""
    top, left, height, width = box
    rows = (np.arange(grid[0]) + 0.5) / grid[0] * image_size[0]
    cols = (np.arange(grid[1]) + 0.5) / grid[1] * image_size[1]
    inside_rows = np.zeros(grid[0], bool)
    for start, end in bands:
        inside_rows |= (rows >= top + start * height) & (rows <= top + end * height)
    inside_cols = (cols >= left) & (cols <= left + width)
    return inside_rows[:, None] & inside_cols[None, :]


@torch.no_grad()
def predict_masks(model: FeatureMaskNetwork, paths: Sequence[str], batch_size: int = 64,
                  device: str | torch.device = "cpu") -> np.ndarray:
    """The MN's masks ``(N, h, w)`` for images (decoded at the model's input size, unaugmented)."""
    model = model.to(device).eval()
    cache = ImageCache.build(list(paths), model.input_size)
    batches = CachedBatches(cache, [0] * len(cache), batch_size, shuffle=False, drop_last=False, augment=False,
                            device=torch.device(device))
    return torch.cat([model(images).mask.cpu() for images, _ in batches]).numpy()


@dataclass
class Grounding:
    """Per detail type: the mean grounding ratio, its standard error and the images it is measured on."""

    ratio: dict[str, float]
    stderr: dict[str, float]
    images: dict[str, int]
    #: per detail type, the mean mask relative to its image's mean, over those images (for the picture)
    mean_mask: dict[str, np.ndarray]
    #: per detail type, the mean region (share of images whose cell is in the region)
    mean_region: dict[str, np.ndarray]

    def to_dict(self) -> dict[str, Any]:
        return {"ratio": self.ratio, "stderr": self.stderr, "images": self.images}


def mask_grounding(masks: np.ndarray, rows: Sequence[Mapping[str, Any]], metadata: Mapping[str, Any],
                   shared: bool = False) -> Grounding:
    """The grounding ratio per detail type for ``masks[i]`` of image ``rows[i]`` (rows of ``synthetic.json``).

    ``shared=True`` measures the control instead: each detail on the images of identities whose group mates
    all share it (it cannot tell them apart). A mask that weights a body region whatever the identity scores
    the same in both; one that follows the discriminative details scores higher without ``shared``.
    """
    identities = {ident["pid"]: ident for ident in metadata["identities"]}
    groups: dict[int, list[dict]] = {}
    for ident in metadata["identities"]:
        groups.setdefault(ident["group"], []).append(ident)
    layout = metadata["body_layout"]
    image_size = (int(metadata["config"]["image_height"]), int(metadata["config"]["image_width"]))
    grid = tuple(masks.shape[1:])
    ratios: dict[str, list[float]] = {d: [] for d in DETAIL_BANDS}
    sums = {d: np.zeros(grid) for d in DETAIL_BANDS}
    regions = {d: np.zeros(grid) for d in DETAIL_BANDS}
    for mask, row in zip(masks, rows, strict=True):
        identity = identities.get(row["pid"])
        if identity is None or row["box_height"] <= 0:
            continue
        excess = mask.astype(np.float64) - 1.0
        total = excess.sum()
        mates = [m for m in groups[identity["group"]] if m["pid"] != identity["pid"]]
        box = (row["box_top"], row["box_left"], row["box_height"], row["box_width"])
        telling = discriminative_details(identity, mates)
        for detail in (set(DETAIL_BANDS) - telling if shared else telling):
            if detail in VISIBLE_FROM and row["view"] not in VISIBLE_FROM[detail]:
                continue
            if detail == "bag" and identity["local"]["bag"] == "none":
                continue  # a missing bag has no region to look at
            region = region_grid(box, image_size, [tuple(layout[b]) for b in DETAIL_BANDS[detail]], grid)
            if not region.any():
                continue
            sums[detail] += mask / mask.mean()
            regions[detail] += region
            if total > 1e-9:
                ratios[detail].append(float(excess[region].sum() / total / region.mean()))
    counts = {d: len(v) for d, v in ratios.items()}
    return Grounding(
        ratio={d: float(np.mean(v)) if v else float("nan") for d, v in ratios.items()},
        stderr={d: float(np.std(v, ddof=1) / np.sqrt(len(v))) if len(v) > 1 else float("nan")
                for d, v in ratios.items()},
        images=counts,
        mean_mask={d: sums[d] / max(counts[d], 1) for d in DETAIL_BANDS},
        mean_region={d: regions[d] / max(counts[d], 1) for d in DETAIL_BANDS})


def grounding_markdown(learned: Grounding, untrained: Grounding) -> str:
    """A table: detail type, images, grounding of the trained and of an untrained MN (mean ± standard error)."""
    lines = ["| detail | images | trained MN | untrained MN |", "|---|---:|---:|---:|"]
    for detail in DETAIL_BANDS:
        cells = [f"{g.ratio[detail]:.2f} ± {g.stderr[detail]:.2f}" if learned.images[detail] else "n/a"
                 for g in (learned, untrained)]
        lines.append(f"| {detail} | {learned.images[detail]} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines) + ("\n\nmean ± standard error over images; 1.00 = the mask's excess weight (mask - 1) "
                              "falls on the region in proportion to its area")


def untrained_mixing_copy(model: FeatureMaskNetwork, state: Mapping[str, Any]) -> FeatureMaskNetwork:
    """``model`` with its MN's FC as stage 2 starts it (the recipe's seeded initialisation): the reference.

    The MN's BatchNorm statistics are kept: they describe the frozen GRN's g, not anything the MN learned.
    """
    from fmn_core.engine.checkpoint import build_model
    from fmn_core.engine.config import TrainConfig

    config = TrainConfig.from_dict(state["config"])
    torch.manual_seed(config.seed + 1)  # as stage2_model seeds the fresh MN
    fresh = build_model(config, int(state["num_classes"]), pretrained="none")
    copy = build_model(config, int(state["num_classes"]), pretrained="none")
    copy.load_state_dict(model.state_dict())
    copy.mixing.transform.load_state_dict(fresh.mixing.transform.state_dict())
    return copy.eval()


def synthetic_test_rows(metadata: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The query and gallery images of people (not distractors or junk), as dicts of ``synthetic.json``'s columns."""
    columns = metadata["images"]["columns"]
    rows = [dict(zip(columns, row, strict=True)) for row in metadata["images"]["rows"]]
    return [row for row in rows if row["split"] in ("query", "gallery") and row["pid"] > 0]


def grounding_of_checkpoint(checkpoint: str, synthetic_root: str, device: str = "cpu",
                            max_images: int | None = None, shared: bool = False) -> tuple[Grounding, Grounding] | None:
    """(trained MN, untrained MN) grounding of ``fmn.pt`` on the synthetic dataset's test images; None for a
    constant mask (the control without the MN), which has no excess weight anywhere."""
    from pathlib import Path

    from fmn_core.data.synthetic import SPLIT_FOLDERS, read_metadata
    from fmn_core.engine.checkpoint import load_checkpoint, model_from_checkpoint

    state = load_checkpoint(checkpoint)
    if state["stage"] != 2:
        raise FMNInputError(f"{checkpoint} is a stage-{state['stage']} checkpoint; the mask needs the trained FMN")
    if state["config"].get("mask_mode") == "constant":
        return None
    model = model_from_checkpoint(state, source=str(checkpoint)).eval()
    metadata = read_metadata(synthetic_root)
    rows = synthetic_test_rows(metadata)
    if max_images is not None:
        rows = rows[::max(1, len(rows) // max_images)][:max_images]
    paths = [str(Path(synthetic_root) / SPLIT_FOLDERS[row["split"]] / row["filename"]) for row in rows]
    learned = mask_grounding(predict_masks(model, paths, device=device), rows, metadata, shared)
    untrained = mask_grounding(predict_masks(untrained_mixing_copy(model, state), paths, device=device), rows,
                               metadata, shared)
    return learned, untrained
