"""The promotion rule and the deployed folder's switch, on real folders (no Dagster, no DVC)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fmn_assets.promotion import (
    CHAMPION_FILE,
    DeployedFolder,
    append_history,
    judge,
    parse_compared,
    read_history,
)

SCORES = {"FMN": {"rank1": 80.0, "mAP": 70.0}, "GRN": {"rank1": 75.0, "mAP": 66.0}}


def _model(folder: Path, model_id: str, weights: bytes) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "fmn.pt").write_bytes(weights)
    (folder / CHAMPION_FILE).write_text(json.dumps({"id": model_id}))


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())} if folder.exists() else {}


def test_the_gate_promotes_within_the_tolerance_and_keeps_a_worse_model_out():
    compared = parse_compared(["FMN.rank1", "FMN.mAP"])
    slightly_worse = {"FMN": {"rank1": 79.6, "mAP": 70.2}}
    verdict = judge(slightly_worse, SCORES, compared, tolerance=0.5)
    assert verdict.promote and "FMN rank1 -0.40" in verdict.reason
    worse = {"FMN": {"rank1": 78.0, "mAP": 70.5}}
    verdict = judge(worse, SCORES, compared, tolerance=0.5)
    assert not verdict.promote and "FMN rank1 78.00 vs 80.00 (-2.00)" in verdict.reason
    assert [r["within_tolerance"] for r in verdict.rows] == [False, True]
    assert judge(worse, SCORES, compared, tolerance=2.0).promote  # the tolerance is the operator's choice


@pytest.mark.parametrize("names", [["FMN.top1"], ["fmn.rank1"], [], ["FMN + re-ranking"]])
def test_unknown_scores_are_refused_naming_what_can_be_compared(names):
    with pytest.raises(ValueError, match="expected ROW.METRIC names, ROW one of GRN, LAN, FMN"):
        parse_compared(names)
    assert parse_compared(["FMN + re-ranking.mAP"]) == [("FMN + re-ranking", "mAP")]


def test_the_switch_replaces_the_folder_whole_and_commits_once(tmp_path):
    folder = DeployedFolder(tmp_path / "deployed")
    _model(folder.path, "old", b"old weights")
    _model(folder.stage(), "new", b"new weights")
    committed = []
    folder.switch({"id": "d1"}, committed.append)
    assert _tree(folder.path)["fmn.pt"] == b"new weights" and committed == [{"id": "d1"}]
    assert not folder.staged.exists() and not folder.retired.exists() and not folder.journal.exists()


def test_a_run_killed_before_the_exchange_leaves_the_old_folder(tmp_path):
    folder = DeployedFolder(tmp_path / "deployed")
    _model(folder.path, "old", b"old weights")
    before = _tree(folder.path)
    _model(folder.stage(), "new", b"new weights")  # built, never switched: the process died here
    (folder.journal).write_text(json.dumps({"decision": {"id": "d1"}, "new": "new", "old": "old"}))
    committed = []
    said = folder.recover(committed.append)
    assert said == "discarded an interrupted deployment of new; old stays deployed"
    assert _tree(folder.path) == before and committed == [] and not folder.staged.exists()


def test_a_run_killed_after_the_exchange_is_completed_by_the_next(tmp_path):
    folder = DeployedFolder(tmp_path / "deployed")
    _model(folder.path, "new", b"new weights")  # the exchange happened; pointer and history were not written
    _model(folder.staged, "old", b"old weights")
    folder.journal.write_text(json.dumps({"decision": {"id": "d1"}, "new": "new", "old": "old"}))
    committed = []
    assert folder.recover(committed.append) == "completed the interrupted deployment of new"
    assert committed == [{"id": "d1"}] and _tree(folder.path)["fmn.pt"] == b"new weights"
    assert not folder.journal.exists() and not folder.staged.exists()


def test_a_run_killed_between_the_two_fallback_renames_gets_its_folder_back(tmp_path):
    folder = DeployedFolder(tmp_path / "deployed")
    _model(folder.retired, "old", b"old weights")  # deployed/ renamed away, the staged one not yet in place
    _model(folder.staged, "new", b"new weights")
    folder.journal.write_text(json.dumps({"decision": {"id": "d1"}, "new": "new", "old": "old"}))
    assert "old stays deployed" in folder.recover(lambda decision: None)
    assert _tree(folder.path)["fmn.pt"] == b"old weights"


def test_the_history_is_appended_once_per_decision_and_rewritten_atomically(tmp_path):
    path = tmp_path / "promotions.jsonl"
    append_history(path, {"id": "a", "decision": "promoted"})
    append_history(path, {"id": "b", "decision": "kept"})
    append_history(path, {"id": "b", "decision": "kept"})  # a completed interrupted switch commits again
    assert [entry["id"] for entry in read_history(path)] == ["a", "b"]
    assert [p.name for p in tmp_path.iterdir()] == ["promotions.jsonl"]  # no temporary file left
