"""A table of bad inputs through the readers, the `fmn` command and the asset configs.

Each case builds its bad input for real (files on disk), runs the command a user
would, and checks two things: the message names the file or field and says what
was expected, and nothing that existed before was modified. The README's
bad-input table lists the same cases.
"""

from __future__ import annotations

import hashlib
import os
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fmn_core.cli import main as fmn_main
from fmn_core.data import read_dataset
from fmn_core.data.loading import decode_image
from tests.helpers import market, write_image


def manifest(root: Path, lines: list[str], encoding: str = "utf-8", newline: str = "\n") -> Path:
    """Images a..f and a manifest ``lines`` (header added) naming them."""
    for index, name in enumerate("abcdef"):
        write_image(root / "imgs" / f"{name}.jpg", seed=index)
    body = ["path,pid,camid,split", "imgs/a.jpg,1,0,train", "imgs/b.jpg,2,1,train", "imgs/c.jpg,3,0,query",
            "imgs/d.jpg,3,1,gallery", *lines]
    path = root / "manifest.csv"
    path.write_bytes(newline.join(body).encode(encoding) + newline.encode())
    return path


def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.md5(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.is_symlink()}


def fmn(*args) -> tuple[int, str, str]:
    """The `fmn` command in this process; returns (exit code, stdout, stderr)."""
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = fmn_main([str(a) for a in args])
        except SystemExit as exit_:  # argparse refusing an option: usage and the reason on stderr
            code = exit_.code
    return code, out.getvalue(), err.getvalue()


@dataclass
class Case:
    """One bad input: ``run(folder)`` returns the text a user reads; ``expect`` must be in it."""

    name: str
    run: Callable[[Path], str]
    expect: str


def _cli(*args) -> Callable[[Path], str]:
    def run(folder: Path) -> str:
        code, out, err = fmn(*[str(a).format(folder=folder) for a in args])
        assert code in (0, 2) and "Traceback" not in err, err
        return f"exit {code}\n{out}\n{err}"
    return run


def _reader(kind: str, build: Callable[[Path], Path], strict: bool = False, check: str = "decode"):
    def run(folder: Path) -> str:
        root = build(folder)
        try:
            loaded = read_dataset(kind, root, check_images=check, strict=strict)
        except Exception as exc:  # a DatasetError is the answer a user reads
            return f"{type(exc).__name__}: {exc}"
        return loaded.report.to_markdown() + "\n" + str(loaded.report)
    return run


def _renamed_query_folder(folder: Path) -> Path:
    root = market(folder / "m")
    (root / "query").rename(root / "queries")
    return root


def _all_training_names_malformed(folder: Path) -> Path:
    root = market(folder / "m")
    for path in (root / "bounding_box_train").iterdir():
        path.rename(path.with_name("x" + path.name))
    return root


def _exif_rotated(folder: Path) -> str:
    pixels = np.zeros((64, 128, 3), np.uint8)
    pixels[:, :64] = 255  # stored sideways: the left half is white
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to view
    image.save(folder / "rotated.jpg", exif=exif.tobytes())
    upright = decode_image(folder / "rotated.jpg", (128, 64))
    return f"top {upright[:, :64].mean():.0f} bottom {upright[:, 64:].mean():.0f}"


def _sixteen_bit(folder: Path) -> str:
    ramp = np.linspace(0, 65535, 128 * 64).reshape(128, 64).astype(np.uint16)
    Image.fromarray(ramp).save(folder / "deep.png")
    decoded = decode_image(folder / "deep.png", (128, 64))
    return f"min {decoded.min()} max {decoded.max()} mean {decoded.mean():.0f}"


def _gray_and_cmyk(folder: Path) -> str:
    Image.new("L", (64, 128), 90).save(folder / "gray.jpg")
    Image.new("CMYK", (64, 128), (0, 255, 255, 0)).save(folder / "cmyk.jpg")
    gray, cmyk = decode_image(folder / "gray.jpg", (128, 64)), decode_image(folder / "cmyk.jpg", (128, 64))
    return f"gray {gray.shape} {gray[:, 0, 0].tolist()} cmyk {cmyk.shape} red {cmyk[0].mean() > 200}"


def _unicode_paths(folder: Path) -> Path:
    write_image(folder / "café dir" / "ä b.jpg", seed=1)
    return manifest(folder, ["café dir/ä b.jpg,4,1,train"])


def _symlink_loop(folder: Path) -> Path:
    root = market(folder / "market")
    os.symlink(root / "bounding_box_train" / "loop_b.jpg", root / "bounding_box_train" / "0009_c1s1_000099_00.jpg")
    os.symlink(root / "bounding_box_train" / "0009_c1s1_000099_00.jpg", root / "bounding_box_train" / "loop_b.jpg")
    os.symlink(root, root / "bounding_box_train" / "folder_loop")
    return root


def _bomb(folder: Path) -> Path:
    root = market(folder / "market")
    Image.new("L", (1, 1)).save(root / "bounding_box_test" / "0003_c4s1_000077_00.png")
    data = bytearray((root / "bounding_box_test" / "0003_c4s1_000077_00.png").read_bytes())
    data[16:24] = (30000).to_bytes(4, "big") * 2  # the IHDR header now claims 30000 x 30000 pixels
    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")  # with a valid checksum
    (root / "bounding_box_test" / "0003_c4s1_000077_00.jpg").write_bytes(bytes(data))
    (root / "bounding_box_test" / "0003_c4s1_000077_00.png").unlink()
    return root


def _nan_grn(folder: Path) -> str:
    from fmn_core.engine import CheckpointError, preset
    from fmn_core.engine.checkpoint import build_model, save_checkpoint
    from fmn_core.engine.trainer import stage2_model

    config = preset("cpu", pretrained="none")
    model = build_model(config, 2)
    with torch.no_grad():
        model.grn_classifier.weight[0, 0] = float("nan")
    save_checkpoint(folder / "grn.pt", model=model, config=config, stage=1, epoch=1, complete=True,
                    label_map={0: 1, 1: 2})
    from fmn_core.engine import load_checkpoint

    try:
        stage2_model(load_checkpoint(folder / "grn.pt"), config, 2, str(folder / "grn.pt"))
    except CheckpointError as exc:
        return str(exc)
    return "accepted"


def _other_architecture(folder: Path) -> str:
    from fmn_core.engine import CheckpointError, load_checkpoint, preset
    from fmn_core.engine.checkpoint import build_model, save_checkpoint
    from fmn_core.engine.trainer import stage2_model

    lite = preset("cpu", pretrained="none")
    save_checkpoint(folder / "grn.pt", model=build_model(lite, 2), config=lite, stage=1, epoch=1, complete=True,
                    label_map={0: 1, 1: 2})
    try:
        stage2_model(load_checkpoint(folder / "grn.pt"), preset("paper", pretrained="none", arch="resnet18",
                                                                 input_height=128, input_width=64), 2, "grn.pt")
    except CheckpointError as exc:
        return str(exc)
    return "accepted"


def _unknown_config_key(folder: Path) -> str:
    import dagster as dg

    from fmn_assets import defs

    job = defs.resolve_job_def("fmn_pipeline")
    try:
        job.execute_in_process(run_config={"ops": {"grn_checkpoint": {"config": {"epochz": 3}}}},
                               partition_key="synthetic", instance=dg.DagsterInstance.ephemeral())
    except dg.DagsterInvalidConfigError as exc:
        return str(exc)
    return "accepted"


def _evaluate_split_table(folder: Path) -> str:
    loaded = read_dataset("market1501", market(folder / "market"))
    loaded.save(folder / "splits.parquet")
    return _cli("evaluate", "{folder}/splits.parquet")(folder)


def _truncated_jpeg_in_training(folder: Path) -> str:
    from fmn_core.data.loading import ImageCache

    path = write_image(folder / "cut.jpg", size=(256, 128))
    path.write_bytes(path.read_bytes()[:300])
    try:
        ImageCache.build([str(path)], (128, 64))
    except OSError as exc:
        return str(exc)
    return "accepted"


def _split_table(folder: Path, change=None, keep_root: bool = True) -> Path:
    """The manifest's split table saved as fmn writes it, then changed with pandas/pyarrow as a user might."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    loaded = read_dataset("custom", manifest(folder, []))
    path = loaded.save(folder / "splits.parquet")
    if change is not None:
        table = pq.read_table(path)
        frame = change(table.to_pandas())
        new = pa.Table.from_pandas(frame, preserve_index=False)
        pq.write_table(new.replace_schema_metadata(table.schema.metadata if keep_root else None), path)
    return path


def _labels_edited(frame):
    return frame.assign(label=frame.label.where(frame.split != "train", 5))


def _descriptor_table(folder: Path, name: str = "d.parquet") -> Path:
    from fmn_core.retrieval import DescriptorTable

    rows = read_dataset("custom", manifest(folder, [])).table
    rows = rows[rows.split != "train"].reset_index(drop=True)[["path", "pid", "camid", "split"]]
    rng = np.random.default_rng(0)
    features = {kind: rng.normal(size=(len(rows), 8)).astype(np.float32) for kind in ("grn", "lan", "fmn")}
    return DescriptorTable(rows, features).save(folder / name)


def _dataset_descriptors(folder: Path, name: str, splits: tuple[str, ...]) -> Path:
    """A descriptor table of one dataset (its own manifest under ``folder/name``), as fmn extract records it."""
    from fmn_core.data.schema import split_table_fingerprint
    from fmn_core.retrieval import DescriptorTable

    table = read_dataset("custom", manifest(folder / name, [])).table
    rows = table[table.split.isin(splits)].reset_index(drop=True)
    rng = np.random.default_rng(len(name))
    features = {kind: rng.normal(size=(len(rows), 8)).astype(np.float32) for kind in ("grn", "lan", "fmn")}
    fingerprint = split_table_fingerprint(table)
    return DescriptorTable(rows[["path", "pid", "camid", "split"]], features,
                           splits_fingerprint=fingerprint).save(folder / f"{name}_{splits[0]}.parquet")


def _cross_dataset_evaluation(folder: Path) -> str:
    query = _dataset_descriptors(folder, "market", ("query",))
    gallery = _dataset_descriptors(folder, "duke", ("gallery",))
    return _cli("evaluate", str(query), str(gallery))(folder)


def _query_split_as_gallery(folder: Path) -> str:
    queries = _dataset_descriptors(folder, "market", ("query",))
    return _cli("search", "--gallery", str(queries), "--model", "{folder}/fmn.pt", "{folder}/market/imgs/a.jpg")(folder)


def _second_training_into_one_out(folder: Path) -> str:
    from fmn_core.engine.out_lock import training_output

    splits = _split_table(folder)
    with training_output(folder / "run", stage=1):  # the first training, still running
        return _cli("train-stage1", "--splits", str(splits), "--set", "pretrained=none", "--set", "device=cpu",
                    "--out", "{folder}/run")(folder)


def _write_under_a_file_size_limit(folder: Path) -> str:
    """A descriptor table written over an earlier one with `ulimit -f` too small for it (a full disk)."""
    import subprocess
    import sys

    earlier = folder / "results" / "d.parquet"
    earlier.parent.mkdir()
    _descriptor_table(folder, "small.parquet")
    earlier.write_bytes((folder / "small.parquet").read_bytes())
    script = (
        "import resource, sys, numpy as np, pandas as pd\n"
        "from fmn_core.retrieval import DescriptorTable\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (20000, resource.RLIM_INFINITY))\n"
        f"rows = pd.DataFrame({{'path': ['{folder}/imgs/a.jpg'] * 2000, 'pid': 1, 'camid': 0, 'split': 'gallery'}})\n"
        "try:\n"
        "    matrix = np.random.default_rng(0).normal(size=(2000, 64)).astype(np.float32)\n"
        "    DescriptorTable(rows, {'fmn': matrix}).save(sys.argv[1])\n"
        "except OSError as exc:\n"
        "    print(type(exc).__name__, exc)\n")
    out = subprocess.run([sys.executable, "-c", script, str(earlier)], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parents[2])
    leftovers = [p.name for p in earlier.parent.iterdir() if p.name.endswith(".tmp")]
    assert not leftovers and "at most 20.0 KB (ulimit -f)" in out.stdout and "d.parquet is kept" in out.stdout, out
    assert earlier.read_bytes() == (folder / "small.parquet").read_bytes()  # the earlier table, untouched
    return out.stdout + out.stderr


def _fp16_on_cpu(folder: Path) -> str:
    return _cli("train-stage1", "--splits", str(_split_table(folder)), "--set", "pretrained=none", "--set",
                "device=cpu", "--set", "amp=fp16", "--out", "{folder}/run")(folder)


def _mask_cell_larger_than_the_mask(folder: Path) -> str:
    return _cli("train-stage1", "--splits", str(_split_table(folder)), "--set", "pretrained=none", "--set",
                "device=cpu", "--set", "mask_cell=1000", "--out", "{folder}/run")(folder)


def _list_column_descriptors(folder: Path) -> str:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = _descriptor_table(folder)
    table = pq.read_table(path)
    variable = pa.array([list(map(float, row)) for row in table.column("fmn").to_pylist()], type=pa.list_(pa.float64()))
    pq.write_table(table.set_column(table.column_names.index("fmn"), "fmn", variable), path)
    return _cli("evaluate", str(path))(folder)


def _partial_fmn(folder: Path) -> str:
    from fmn_core.engine import preset
    from fmn_core.engine.checkpoint import build_model, save_checkpoint

    config = preset("cpu", pretrained="none")
    save_checkpoint(folder / "fmn.partial.pt", model=build_model(config, 2), config=config, stage=2, epoch=1,
                    complete=False, label_map={0: 1, 1: 2})
    manifest(folder, [])
    return _cli("extract", "--dataset", "custom", "--root", "{folder}", "--checkpoint", "{folder}/fmn.partial.pt",
                "--out", "{folder}/d.parquet")(folder)


def _corrupt_exif(folder: Path) -> str:
    import warnings

    Image.fromarray(np.full((128, 64, 3), 40, np.uint8)).save(folder / "x.png", exif=b"garbage!garbage")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        decoded = decode_image(folder / "x.png", (128, 64))
    return f"{decoded.shape} {[str(w.message) for w in caught]}"


def _unclosed_quote(folder: Path) -> Path:
    path = manifest(folder, ['"imgs/e.jpg,4,0,train'])
    path.write_text(path.read_text() + "x" * 140_000 + "\n")
    return path


def _zero_byte_protocol(folder: Path) -> Path:
    root = folder / "cuhk"
    root.mkdir()
    (root / "cuhk-03.mat").write_bytes(b"")
    (root / "cuhk03_new_protocol_config_detected.mat").write_bytes(b"")
    return root


def _asset_config_out_of_range(folder: Path) -> str:
    import dagster as dg

    from fmn_assets.assets import ASSETS, CHECKS
    from fmn_assets.resources import DVCResource, ProjectPaths

    os.environ["FMN_PROJECT_DIR"] = str(folder)  # restored by the test's monkeypatch
    result = dg.materialize([*ASSETS, *CHECKS], selection=["evaluation_metrics"], partition_key="synthetic",
                            resources={"paths": ProjectPaths(), "dvc": DVCResource()}, raise_on_error=False,
                            run_config={"ops": {"evaluation_metrics": {"config": {"k1": 0}}}})
    errors = [e.event_specific_data.error for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    return "\n".join(f"{e.message}\n{e.cause.message if e.cause else ''}" for e in errors)


def _export_api_opset(folder: Path) -> str:
    from fmn_core.export import export_onnx

    try:
        export_onnx(folder / "fmn.pt", folder / "m.onnx", opset=5)
    except ValueError as exc:
        return str(exc)
    return "accepted"


def _missing_gpu(folder: Path) -> str:
    from fmn_core.utils.device import resolve_device

    try:
        resolve_device("cuda:99")
    except ValueError as exc:
        return str(exc)
    return "accepted"


def _malformed_checkpoint(folder: Path) -> str:
    from fmn_core.engine.checkpoint import FORMAT, REQUIRED_KEYS

    state = {key: None for key in REQUIRED_KEYS}
    torch.save({**state, "format": FORMAT, "model": {"w": [1, 2]}}, folder / "odd.pt")
    manifest(folder, [])
    return _cli("extract", "--dataset", "custom", "--root", "{folder}", "--checkpoint", "{folder}/odd.pt",
                "--out", "{folder}/d.parquet")(folder)


CASES = [
    Case("empty folder", _reader("market1501", lambda f: (f / "empty").mkdir() or f / "empty"),
         "bounding_box_train"),
    Case("wrong layout", _reader("market1501", _renamed_query_folder), "query"),
    Case("non-image file named .jpg", _reader("market1501", lambda f: market(
        f / "m", {"bounding_box_train/0001_c3s1_000050_00.jpg": "not a picture"})),
        "0001_c3s1_000050_00.jpg: not a recognised image format"),
    Case("zero-byte image", _reader("market1501", lambda f: market(
        f / "m", {"bounding_box_test/0004_c3s1_000051_00.jpg": ""})), "0004_c3s1_000051_00.jpg: not a recognised"),
    Case("malformed file name", _reader("market1501", lambda f: market(
        f / "m", {"bounding_box_train/person1_cam2.jpg": "x"})), "person1_cam2.jpg"),
    Case("camera id beyond the declared range (c7 of 6)", _reader("market1501", lambda f: market(
        f / "m", {"bounding_box_train/0001_c7s1_000052_00.jpg": "x"})), "camera number outside 1..6"),
    Case("query with no gallery match", _reader("market1501", lambda f: (
        market(f / "m"), write_image(f / "m" / "query" / "0005_c1s1_000053_00.jpg"))[0]), "0005_c1s1_000053_00.jpg"),
    Case("train/test identity overlap", _reader("market1501", lambda f: (
        market(f / "m"), write_image(f / "m" / "bounding_box_train" / "0003_c1s1_000054_00.jpg"))[0], strict=True),
        "identity"),
    Case("strict error shows its cause", _reader("market1501", _all_training_names_malformed, strict=True),
         "what the reader skipped, which may be why"),
    Case("symlink loop", _reader("market1501", _symlink_loop), "0009_c1s1_000099_00.jpg"),
    Case("PNG header claiming 30000 x 30000 pixels", _reader("market1501", _bomb, check="header"),
         "0003_c4s1_000077_00.jpg: too large to decode safely"),
    Case("EXIF-rotated JPEG is turned upright", _exif_rotated, "top 255 bottom 0"),
    # the ramp covers 0..65535 evenly; 16 bits are scaled to 8 by v * 255 // 65535 (flooring), hence mean 127
    Case("16-bit PNG keeps its grey levels", _sixteen_bit, "min 0 max 255 mean 127"),
    Case("grayscale and CMYK images become RGB", _gray_and_cmyk, "gray (3, 128, 64) [90, 90, 90]"),
    Case("unicode and spaces in paths", _reader("custom", _unicode_paths, strict=True), "train 3 images"),
    Case("CSV with a byte-order mark and CRLF", _reader("custom", lambda f: manifest(
        f, [], encoding="utf-8-sig", newline="\r\n"), strict=True), "train 2 images"),
    Case("CSV in Latin-1", _reader("custom", lambda f: manifest(f, ["imgs/caf\xe9.jpg,4,0,train"],
                                                                 encoding="latin-1")),
         "is not UTF-8 text (line 6"),
    Case("CSV row with extra fields", _reader("custom", lambda f: manifest(f, ["imgs/e.jpg,4,0,train,x,y"])),
         "manifest.csv:6: 2 more fields than the header"),
    Case("duplicated manifest rows", _reader("custom", lambda f: manifest(f, ["imgs/a.jpg,1,0,train"])),
         "imgs/a.jpg (first on line 2)"),
    Case("negative person id", _reader("custom", lambda f: manifest(f, ["imgs/e.jpg,-7,0,train"])),
         "pid=-7 is negative"),
    Case("person id too large for int64", _reader("custom", lambda f: manifest(
        f, ["imgs/e.jpg,99999999999999999999999,0,train"])), "pid=99999999999999999999999 is too large"),
    Case("inspect --out over its own manifest", lambda f: (manifest(f, []), _cli(
        "inspect", "custom", "{folder}/manifest.csv", "--out", "{folder}/manifest.csv")(f))[1],
        "is also an input of this command"),
    Case("extract --out over a file of another kind", lambda f: (manifest(f, []), _cli(
        "extract", "--dataset", "custom", "--root", "{folder}", "--checkpoint", "{folder}/none.pt",
        "--out", "{folder}/imgs/a.jpg")(f))[1], "exists and is not a descriptor table"),
    Case("evaluate given a split table", _evaluate_split_table, "holds no descriptor column"),
    Case("--set with a wrong type", _cli("train-stage1", "--splits", "x.parquet", "--set", "batch_size=abc",
                                         "--out", "{folder}/run"), "batch_size takes an integer, got 'abc'"),
    Case("--set with an unreadable boolean", _cli("train-stage1", "--splits", "x.parquet", "--set",
                                                  "channels_last=maybe", "--out", "{folder}/run"),
         "channels_last takes true or false"),
    Case("--set with an unknown option", _cli("train-stage1", "--splits", "x.parquet", "--set", "epochz=3",
                                              "--out", "{folder}/run"), "unknown option 'epochz'"),
    Case("truncated JPEG reaching the image cache", _truncated_jpeg_in_training, "cut.jpg"),
    Case("GRN checkpoint with NaN weights", _nan_grn, "holds NaN or infinite weights in 1 tensors"),
    Case("checkpoint from another architecture", _other_architecture, "was trained with arch='efficientnet_lite0'"),
    Case("asset config with an unknown key", _unknown_config_key, "epochz"),
    Case("damaged EXIF block", _corrupt_exif, "(3, 128, 64)"),
    Case("descriptor column of variable-length lists", _list_column_descriptors,
         "column 'fmn' must hold one fixed-width float descriptor per row"),
    Case("split table with hand-edited labels", lambda f: _cli(
        "train-stage1", "--splits", str(_split_table(f, _labels_edited)), "--out", "{folder}/run")(f),
        "column 'label' must number the train identities"),
    Case("split table with an empty path", lambda f: _cli(
        "train-stage1", "--splits", str(_split_table(f, lambda t: t.assign(path=t.path.where(t.index != 1, None)))),
        "--out", "{folder}/run")(f), "column 'path' has 1 empty value(s) (rows [1])"),
    Case("split table rewritten without fmn's metadata", lambda f: _cli(
        "train-stage1", "--splits", str(_split_table(f, lambda t: t, keep_root=False)), "--out", "{folder}/run")(f),
        "does not record the dataset root"),
    Case("CSV with an unclosed quote", _reader("custom", _unclosed_quote), "cannot parse the CSV"),
    Case("zero-byte CUHK03 files", _reader("cuhk03_detected", _zero_byte_protocol),
         "cannot read protocol file"),
    Case("same person id in train and gallery (custom pid 0)", _reader("custom", lambda f: manifest(
        f, ["imgs/e.jpg,0,0,train", "imgs/f.jpg,0,1,gallery"]), strict=True), "identities appear in both"),
    Case("stage-2 checkpoint left partial", _partial_fmn, "is a partial checkpoint"),
    Case("evaluate given one table twice", lambda f: _cli("evaluate", str(_descriptor_table(f)),
                                                          "{folder}/d.parquet")(f), "appear twice in the same split"),
    Case("search --csv over the user's manifest", lambda f: _cli(
        "search", "--gallery", str(_descriptor_table(f)), "--model", "{folder}/fmn.pt", "{folder}/imgs/a.jpg",
        "--csv", "{folder}/manifest.csv")(f), "is not a CSV file written by fmn"),
    Case("evaluate --json over another JSON file", lambda f: (
        (f / "settings.json").write_text('{"theme": "dark"}'),
        _cli("evaluate", str(_descriptor_table(f)), "--json", "{folder}/settings.json")(f))[1],
        "is not a metrics file written by fmn"),
    Case("evaluate --k2 above --k1", lambda f: _cli("evaluate", str(_descriptor_table(f)), "--rerank", "--k1", "4",
                                                    "--k2", "6")(f), "--k2 6 is larger than --k1 4"),
    Case("evaluate --lambda 2", lambda f: _cli("evaluate", str(_descriptor_table(f)), "--rerank", "--lambda",
                                               "2")(f), "expected a weight between 0 and 1"),
    Case("cuhk01 without its campus folder", _reader("cuhk01", lambda f: f), "no images named like 0001001.png"),
    Case("export --opset 5", _cli("export", "{folder}/fmn.pt", "--out", "{folder}/m.onnx", "--opset", "5"),
         "expected an opset from 18 to"),
    Case("search --top-k 0", _cli("search", "--gallery", "g.parquet", "--model", "m.onnx", "q.jpg", "--top-k", "0"),
         "expected a whole number of at least 1, got '0'"),
    Case("--set stage1_epochs=0", _cli("train-stage1", "--splits", "x.parquet", "--set", "stage1_epochs=0",
                                       "--out", "{folder}/run"), "train-stage1 trains at least 1 epoch"),
    Case("--set weight_decay=nan", _cli("train-stage1", "--splits", "x.parquet", "--set", "weight_decay=nan",
                                        "--out", "{folder}/run"), "weight_decay=nan: must be a finite number"),
    Case("--set device=gpu", _cli("train-stage1", "--splits", "x.parquet", "--set", "device=gpu",
                                  "--out", "{folder}/run"), "expected auto, cpu, cuda, cuda:N or mps"),
    Case("train --out naming a file", lambda f: (manifest(f, []), _cli(
        "train-stage1", "--dataset", "custom", "--root", "{folder}", "--out", "{folder}/manifest.csv")(f))[1],
        "is a file; give the folder"),
    Case("asset config out of range (k1 = 0)", _asset_config_out_of_range, "k1=0: Input should be greater than"),
    Case("export_onnx called with opset 5", _export_api_opset, "opset must be from 18 to"),
    Case("a CUDA device this machine lacks", _missing_gpu, "usable CUDA device(s); use --device cpu"),
    Case("a folder given as --checkpoint", lambda f: (manifest(f, []), _cli(
        "extract", "--dataset", "custom", "--root", "{folder}", "--checkpoint", "{folder}/imgs", "--out",
        "{folder}/d.parquet")(f))[1], "is a folder; give the checkpoint file"),
    Case("a checkpoint with fmn's tag but a malformed body", _malformed_checkpoint,
         "is malformed: config is NoneType, expected dict"),
    Case("evaluate a query and a gallery of two datasets", _cross_dataset_evaluation,
         "the descriptor tables come from different image roots"),
    Case("search with the query split as the gallery", _query_split_as_gallery,
         "holds no gallery-split rows (1 query)"),
    Case("a second training into the same --out", _second_training_into_one_out, "is in use by another training: pid"),
    Case("a write that runs out of room names the file", _write_under_a_file_size_limit,
         "/results/d.parquet: the write failed"),
    Case("--set amp=fp16 on the CPU", _fp16_on_cpu, "amp=fp16 on the CPU"),
    Case("--set mask_cell=1000, larger than the mask", _mask_cell_larger_than_the_mask, "covers the whole"),
    Case("export --out model.pt", _cli("export", "{folder}/fmn.pt", "--out", "{folder}/model.pt"),
         "give a name ending in .onnx"),
    Case("--set seed beyond 64 bits", _cli("train-stage1", "--splits", "x.parquet", "--set",
                                           "seed=99999999999999999999", "--out", "{folder}/run"),
         "must lie in 0..2**63-1"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_is_explained_and_nothing_is_modified(case: Case, tmp_path, monkeypatch):
    monkeypatch.setenv("FMN_PROJECT_DIR", str(tmp_path))  # cases that run assets change it; restored afterwards
    (tmp_path / "keep").mkdir()
    write_image(tmp_path / "keep" / "earlier_result.jpg")
    before = snapshot(tmp_path / "keep")
    text = case.run(tmp_path)
    assert case.expect in text, text[-3000:]
    assert snapshot(tmp_path / "keep") == before


def test_inputs_survive_the_refused_commands(tmp_path):
    path = manifest(tmp_path, [])
    before = path.read_bytes()
    code, _, err = fmn("inspect", "custom", path, "--out", path)
    assert code == 2 and path.read_bytes() == before
    assert "is also an input of this command" in err


def test_table_has_at_least_25_kinds():
    assert len(CASES) >= 25
