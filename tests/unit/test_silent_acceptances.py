"""Issue 22's inputs that were accepted without a word: the API side of the cases in test_bad_inputs.py."""

from __future__ import annotations

import threading
import warnings

import numpy as np
import pytest

from fmn_core.data import read_dataset
from fmn_core.data.schema import split_table_fingerprint
from fmn_core.engine.out_lock import LOCK_NAME, TrainingInProgressError, training_output
from fmn_core.retrieval import DescriptorTable
from fmn_core.retrieval.extractor import note_odd_size
from fmn_core.retrieval.search import Gallery, GalleryWarning
from fmn_core.utils.errors import FMNInputError
from tests.unit.test_bad_inputs import manifest


def _table(folder, extra_lines, splits):
    table = read_dataset("custom", manifest(folder, extra_lines)).table
    rows = table[table.split.isin(splits)].reset_index(drop=True)[["path", "pid", "camid", "split"]]
    features = {"fmn": np.random.default_rng(len(rows)).normal(size=(len(rows), 4)).astype(np.float32)}
    return DescriptorTable(rows, features, splits_fingerprint=split_table_fingerprint(table))


def test_tables_of_two_split_tables_under_one_root_are_refused_unless_allowed(tmp_path):
    query = _table(tmp_path, [], ("query",))
    gallery = _table(tmp_path, ["imgs/e.jpg,9,1,gallery"], ("gallery",))  # the same folder, another split table
    with pytest.raises(FMNInputError, match="different split tables"):
        DescriptorTable.concat([query, gallery])
    both = DescriptorTable.concat([query, gallery], allow_mixed_datasets=True)
    assert len(both) == len(query) + len(gallery) and both.splits_fingerprint is None


def test_the_fingerprint_survives_saving_and_matches_for_one_split_table(tmp_path):
    query, gallery = _table(tmp_path, [], ("query",)), _table(tmp_path, [], ("gallery",))
    loaded = [DescriptorTable.load(t.save(tmp_path / f"{name}.parquet")) for name, t in
              (("q", query), ("g", gallery))]
    assert loaded[0].splits_fingerprint == query.splits_fingerprint == loaded[1].splits_fingerprint
    assert len(DescriptorTable.concat(loaded)) == len(query) + len(gallery)


def test_a_loaded_gallery_raises_no_numpy_writability_warning_and_says_which_split_it_holds(tmp_path):
    path = _table(tmp_path, [], ("query", "gallery")).save(tmp_path / "d.parquet")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch's "NumPy array is not writable" would fail here
        gallery = Gallery.load(path)
    assert gallery.splits == "1 gallery"
    only_queries = _table(tmp_path, [], ("query",)).save(tmp_path / "q.parquet")
    with pytest.warns(GalleryWarning, match="holds no gallery-split rows"):
        Gallery.load(only_queries)


def test_a_failed_training_leaves_no_empty_out_folder_and_the_lock_is_released(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(RuntimeError), training_output(out, stage=1):
        raise RuntimeError("the training failed before writing")
    assert not out.exists()
    with training_output(out, stage=1):
        (out / "grn.pt").write_bytes(b"x")
    assert sorted(p.name for p in out.iterdir()) == ["grn.pt"]  # the lock file is gone, the result stays


def test_a_second_holder_is_refused_with_the_first_named_while_a_thread_holds_the_folder(tmp_path):
    out, held, release = tmp_path / "run", threading.Event(), threading.Event()

    def first() -> None:
        with training_output(out, stage=2):
            held.set()
            release.wait(10)

    thread = threading.Thread(target=first)
    thread.start()
    assert held.wait(10)
    try:
        assert (out / LOCK_NAME).is_file()
        with (pytest.raises(TrainingInProgressError, match=r"in use by another training: pid \d+ on .*stage 2"),
              training_output(out, stage=1)):
            pass
    finally:
        release.set()
        thread.join()
    with training_output(out, stage=1):  # free again once the first finished
        pass


@pytest.mark.parametrize("width, height, noted", [(64, 128, False), (60, 160, False), (1, 1, True),
                                                  (5000, 20, True), (20, 5000, True)])
def test_tiny_and_wildly_shaped_images_get_a_note(width, height, noted):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        note_odd_size("x.jpg", width, height, (128, 64))
    assert bool(caught) == noted, [str(w.message) for w in caught]


SAVE_UNDER_A_LIMIT = r"""
import resource, sys
from fmn_core.engine import preset
from fmn_core.engine.checkpoint import build_model, save_checkpoint
config = preset("cpu", pretrained="none")
model = build_model(config, 4)
if sys.argv[2] == "onnx":  # a finished stage-2 checkpoint, written before the limit
    save_checkpoint(sys.argv[1] + ".pt", model=model, config=config, stage=2, epoch=1, complete=True,
                    label_map={i: i for i in range(4)})
resource.setrlimit(resource.RLIMIT_FSIZE, (1_000_000, resource.RLIM_INFINITY))
try:
    if sys.argv[2] == "onnx":
        from fmn_core.export import export_onnx
        export_onnx(sys.argv[1] + ".pt", sys.argv[1])
    else:
        save_checkpoint(sys.argv[1], model=model, config=config, stage=1, epoch=1, complete=True,
                        label_map={i: i for i in range(4)})
except OSError as exc:
    print(type(exc).__name__, exc)
"""


@pytest.mark.parametrize("kind, name", [("checkpoint", "grn.pt"), ("onnx", "fmn.onnx")])
def test_a_checkpoint_or_onnx_write_out_of_room_names_the_file_and_leaves_nothing(tmp_path, kind, name):
    import subprocess
    import sys
    from pathlib import Path

    target = tmp_path / name
    out = subprocess.run([sys.executable, "-c", SAVE_UNDER_A_LIMIT, str(target), kind], capture_output=True,
                         text=True, timeout=240, cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.startswith("NoRoomToWriteError could not write " + str(target)), out.stdout + out.stderr
    assert "at most 1.0 MB (ulimit -f)" in out.stdout and "no file was left" in out.stdout
    assert not target.exists() and not list(tmp_path.glob("*.tmp"))
