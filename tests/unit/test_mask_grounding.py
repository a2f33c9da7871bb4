"""The mask-grounding measure on masks whose answer is known, over a real generated synthetic dataset."""

from __future__ import annotations

import numpy as np
import pytest

from fmn_core.analysis.mask_grounding import (
    DETAIL_BANDS,
    discriminative_details,
    grounding_markdown,
    mask_grounding,
    region_grid,
    synthetic_test_rows,
)
from fmn_core.data.synthetic import BODY_LAYOUT, generate_synthetic, read_metadata

GRID = (32, 16)  # the cpu recipe's res2 mask at 128x64


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("grounding") / "tiny"
    generate_synthetic(root, "tiny")
    meta = read_metadata(root)
    return meta, synthetic_test_rows(meta)


def image_size(meta) -> tuple[int, int]:
    return int(meta["config"]["image_height"]), int(meta["config"]["image_width"])


def test_a_uniform_excess_has_no_preference(tiny):
    meta, rows = tiny
    grounding = mask_grounding(np.full((len(rows), *GRID), 1.5), rows, meta)
    measured = [d for d in DETAIL_BANDS if grounding.images[d]]
    assert measured  # group mates differ in at least two details, so some are measured
    for detail in measured:
        assert grounding.ratio[detail] == pytest.approx(1.0)
    control = mask_grounding(np.full((len(rows), *GRID), 1.5), rows, meta, shared=True)
    for detail in DETAIL_BANDS:
        if control.images[detail]:
            assert control.ratio[detail] == pytest.approx(1.0)
    # each (image, detail) pair is either discriminative or shared, never both
    assert all(grounding.images[d] + control.images[d] > 0 for d in ("shoes",))


def test_excess_on_the_shoes_only_scores_the_shoes_above_one_and_the_head_at_zero(tiny):
    meta, rows = tiny
    masks = np.ones((len(rows), *GRID))
    for mask, row in zip(masks, rows, strict=True):
        box = (row["box_top"], row["box_left"], row["box_height"], row["box_width"])
        mask[region_grid(box, image_size(meta), [BODY_LAYOUT["shoes"]], GRID)] = 2.0
    grounding = mask_grounding(masks, rows, meta)
    assert grounding.images["shoes"] > 0 and grounding.ratio["shoes"] > 5  # the shoes are a small share of the area
    if grounding.images["hat"]:
        assert grounding.ratio["hat"] == 0.0
    table = grounding_markdown(grounding, mask_grounding(np.full_like(masks, 1.5), rows, meta))
    assert "| shoes |" in table and "1.00 ± 0.00" in table


def test_discriminative_details_are_those_a_group_mate_does_not_share(tiny):
    meta, _ = tiny
    groups = {}
    for ident in meta["identities"]:
        groups.setdefault(ident["group"], []).append(ident)
    for members in groups.values():
        for ident in members:
            mates = [m for m in members if m["pid"] != ident["pid"]]
            if mates:  # the generator keeps group mates at least two details apart
                assert len(discriminative_details(ident, mates)) >= 2
            assert discriminative_details(ident, [ident]) == set()
