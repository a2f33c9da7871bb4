"""Where a command may write: never over one of its inputs, never over a file that is not its own earlier output.

``fmn inspect custom m.csv --out m.csv`` once replaced the user's manifest with Parquet;
``fmn search ... --csv manifest.csv`` or ``fmn evaluate ... --json synthetic.json`` could do
the same to any file with the right suffix. An existing file is overwritten only when it
is recognisably an earlier output of the same kind (its columns, header, keys or metadata);
anything else is refused with a message, and the user picks another name.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from fmn_core.utils.errors import FMNInputError

#: The PNG text chunk fmn's pictures carry, so that a later run knows it may replace them.
PICTURE_SOFTWARE = "fmn"
SEARCH_CSV_HEADER = "query,rank,path,pid,camid,distance"


def _parquet_with(columns: tuple[str, ...]) -> Callable[[Path], bool]:
    def recognise(path: Path) -> bool:
        import pyarrow.parquet as pq

        try:
            return bool(set(pq.read_schema(path).names) & set(columns))
        except Exception:  # not Parquet at all
            return False

    return recognise


def _search_csv(path: Path) -> bool:
    with open(path, encoding="utf-8", errors="replace") as handle:
        return handle.readline().strip() == SEARCH_CSV_HEADER


def _metrics_json(path: Path) -> bool:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        return False
    return isinstance(data, dict) and bool(data) and all(isinstance(v, dict) and "mAP" in v for v in data.values())


def _fmn_picture(path: Path) -> bool:
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image.format == "PNG" and image.info.get("Software") == PICTURE_SOFTWARE
    except Exception:  # not an image
        return False


def _fmn_onnx(path: Path) -> bool:
    try:
        import onnx

        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # not ONNX
        return False
    return any(prop.key == "fmn.format" for prop in model.metadata_props)


#: Output kind -> (its suffixes, how an earlier output of this kind is recognised).
OUTPUT_KINDS: dict[str, tuple[tuple[str, ...], Callable[[Path], bool]]] = {
    "split table": ((".parquet",), _parquet_with(("label",))),
    "descriptor table": ((".parquet",), _parquet_with(("fmn", "grn", "lan"))),
    "metrics file": ((".json",), _metrics_json),
    "ONNX model": ((".onnx",), _fmn_onnx),
    "picture": ((".png",), _fmn_picture),
    "CSV file": ((".csv",), _search_csv),
}


def check_output(out: Path, inputs: list[Path | None], kind: str) -> None:
    """Raise ValueError unless ``out`` may be written: not an input, not a folder, new or our own output of ``kind``."""
    suffixes, recognise = OUTPUT_KINDS[kind]
    target = Path(out).expanduser().resolve()
    for source in inputs:
        if source is not None and Path(source).expanduser().resolve() == target:
            raise FMNInputError(f"--out {out} is also an input of this command; write the {kind} elsewhere")
    if target.is_dir():
        raise FMNInputError(f"{out} is a folder; give a file name for the {kind}")
    if not target.exists():
        return
    if target.suffix.lower() not in suffixes:
        raise FMNInputError(f"{out} exists and is not a {kind} ({'/'.join(suffixes)}); refusing to overwrite it")
    if not recognise(target):
        raise FMNInputError(f"{out} exists and is not a {kind} written by fmn; refusing to overwrite it (remove it or "
                            "choose another name)")
