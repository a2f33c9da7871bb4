"""bench.paired_recipes: the candidate minus the baseline, seed by seed, with its standard error."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from bench.paired_recipes import compare


def _study(path: Path, dataset: str, fmn_rank1: dict[str, float]) -> Path:
    scores = {seed: {"fmn": {"scores": {row: {"rank1": value + offset, "mAP": value / 2}
                                        for row, offset in (("GRN", -5.0), ("LAN", -3.0), ("FMN", 0.0))}}}
              for seed, value in fmn_rank1.items()}
    path.write_text(json.dumps({"dataset": dataset, "preset": "cpu", "overrides": [], "machine": "test",
                                "per_seed": scores}))
    return path


def test_paired_difference_and_standard_error(tmp_path: Path) -> None:
    baseline = _study(tmp_path / "a.json", "synthetic", {"0": 80.0, "1": 84.0, "2": 82.0})
    candidate = _study(tmp_path / "b.json", "synthetic", {"0": 81.0, "1": 87.0, "2": 84.0, "3": 99.0})
    result = compare(baseline, candidate)
    fmn = result["rows"]["FMN"]["rank1"]
    assert result["seeds"] == [0, 1, 2]  # seed 3 has no baseline: not paired
    assert fmn["per_seed"] == [1.0, 3.0, 2.0]
    assert fmn["difference"] == 2.0
    assert fmn["standard_error"] == round(1.0 / math.sqrt(3), 2)
    assert fmn["baseline"] == {"mean": 82.0, "std": 2.0}


def test_refuses_different_data_and_a_single_seed(tmp_path: Path) -> None:
    baseline = _study(tmp_path / "a.json", "synthetic", {"0": 80.0, "1": 84.0})
    with pytest.raises(SystemExit, match="different data"):
        compare(baseline, _study(tmp_path / "b.json", "cuhk01", {"0": 80.0, "1": 84.0}))
    with pytest.raises(SystemExit, match="at least two shared seeds"):
        compare(baseline, _study(tmp_path / "c.json", "synthetic", {"1": 80.0}))
