"""Image descriptors (section 3.4) and the tables that hold them.

For every query and gallery image the trained network gives the GRN feature
``g`` and the LAN feature ``l``. Three descriptors are stored, each the one a
row of Table 1 is computed with:

* ``grn``: g / ||g|| (the baseline row, 2048-d for ResNet-50)
* ``lan``: l / ||l||
* ``fmn``: eq. (6), [alpha g/||g||, (1 - alpha) l/||l||] (4096-d)

Optional flip averaging (a common test-time practice, not the paper's) adds the
features of the horizontally flipped image before normalising.

A :class:`DescriptorTable` is written as Parquet: one row per image with
path, pid, camid and split, and one fixed-size list column per descriptor,
so any Arrow reader gets the matrices back without copying. As in a split
table, ``path`` is stored relative to the image root recorded in the schema
metadata and made absolute again on load (:mod:`fmn_core.data.schema`), so a
table pulled by DVC onto another machine still names its images.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from tqdm.auto import tqdm

from fmn_core.data.loading import CachedBatches, ImageCache
from fmn_core.data.schema import (
    IMAGE_ROOT_ATTR,
    IMAGE_ROOT_KEY,
    common_image_root,
    image_root_metadata,
    relative_image_paths,
    require_integers,
    require_values,
    resolve_image_root,
    split_table_fingerprint,
)
from fmn_core.engine.checkpoint import load_checkpoint, model_from_checkpoint, weights_fingerprint
from fmn_core.models import FeatureMaskNetwork
from fmn_core.models.backbone import prefers_channels_last
from fmn_core.models.fmn import descriptors_from_features
from fmn_core.utils.atomic import atomic_write_path
from fmn_core.utils.device import resolve_device
from fmn_core.utils.errors import FMNInputError
from fmn_core.utils.parquet import read_parquet

DESCRIPTOR_KINDS: tuple[str, ...] = ("grn", "lan", "fmn")
MODEL_HASH_KEY = b"fmn.model_hash"
SPLITS_KEY = b"fmn.splits_fingerprint"
META_COLUMNS: tuple[str, ...] = ("path", "pid", "camid", "split")
META_TYPES = {"path": "string", "pid": "int64", "camid": "int64", "split": "string"}


@dataclass
class DescriptorTable:
    """Row metadata plus one float32 matrix per descriptor kind.

    ``image_root``: the folder the images lie under; saved tables store paths relative to it.
    ``model_hash``: :func:`~fmn_core.engine.checkpoint.weights_fingerprint` of the network that
    made the descriptors, so a search can refuse to mix descriptors of two models.
    ``splits_fingerprint``: :func:`~fmn_core.data.schema.split_table_fingerprint` of the split table
    the rows came from, so an evaluation can refuse a query and a gallery of two datasets.
    ``source``: the file it was loaded from, for messages.
    """

    meta: pd.DataFrame
    features: dict[str, np.ndarray]
    alpha: float = 0.5
    image_root: Path | None = None
    model_hash: str | None = None
    splits_fingerprint: str | None = None
    source: str | None = None

    def __post_init__(self) -> None:
        self.meta = self.meta[list(META_COLUMNS)].astype(META_TYPES).reset_index(drop=True)
        for kind, matrix in self.features.items():
            if matrix.shape[0] != len(self.meta):
                raise FMNInputError(f"descriptor {kind!r} has {matrix.shape[0]} rows for {len(self.meta)} images")

    def __len__(self) -> int:
        return len(self.meta)

    def subset(self, split: str) -> DescriptorTable:
        """The rows of one split (``query`` or ``gallery``)."""
        mask = (self.meta["split"] == split).to_numpy()
        return DescriptorTable(self.meta[mask].reset_index(drop=True),
                               {k: v[mask] for k, v in self.features.items()}, self.alpha, self.image_root,
                               self.model_hash, self.splits_fingerprint, self.source)

    def split_counts(self) -> str:
        """The rows per split, in words: '58 query, 116 gallery'."""
        return ", ".join(f"{n} {s}" for s, n in self.meta["split"].value_counts().items())

    def describe(self) -> str:
        """Which file and which splits, for messages: 'query.parquet (58 query)'."""
        return f"{self.source or 'a descriptor table'} ({self.split_counts()})"

    @classmethod
    def concat(cls, tables: Sequence[DescriptorTable], allow_mixed_datasets: bool = False) -> DescriptorTable:
        """One table from several (the query and gallery tables the pipeline writes separately).

        Tables of two datasets, or of two split tables, are refused unless ``allow_mixed_datasets``:
        their pid numbers would be scored as the same people.
        """
        if not tables:
            raise FMNInputError("no descriptor table to concatenate")
        if not allow_mixed_datasets:
            _refuse_mixed_datasets(tables)
        kinds = [sorted(t.features) for t in tables]
        if any(k != kinds[0] for k in kinds) or any(t.alpha != tables[0].alpha for t in tables):
            raise FMNInputError(f"descriptor tables differ in kinds or alpha: {kinds}, {[t.alpha for t in tables]}")
        hashes = {t.model_hash for t in tables if t.model_hash}
        if len(hashes) > 1:
            raise FMNInputError(f"descriptor tables come from different models (hashes {sorted(hashes)}): their "
                                "distances mean nothing; extract every table with the same checkpoint")
        roots = {t.image_root for t in tables}
        meta = pd.concat([t.meta for t in tables], ignore_index=True)
        twice = meta[meta.duplicated(["path", "split"])]
        if len(twice):  # a table given twice, or rows repeated: every metric would count them twice
            raise FMNInputError(f"{len(twice)} image(s) appear twice in the same split, e.g. {twice.path.iloc[0]} "
                                f"({twice.split.iloc[0]}); give each descriptor table once")
        splits = {t.splits_fingerprint for t in tables}
        return cls(meta,
                   {k: np.concatenate([t.features[k] for t in tables]) for k in kinds[0]}, tables[0].alpha,
                   roots.pop() if len(roots) == 1 else None, hashes.pop() if hashes else None,
                   splits.pop() if len(splits) == 1 else None)

    def save(self, path: str | Path, root: str | Path | None = None) -> Path:
        """Parquet, written atomically; alpha and the image root go into the schema metadata.

        Image paths are written relative to ``root`` (default: :attr:`image_root`,
        else the common folder of the images).
        """
        path = Path(path)
        root = Path(root or self.image_root or common_image_root(self.meta["path"].tolist()))
        columns = {name: pa.array(self.meta[name].to_numpy()) for name in META_COLUMNS}
        columns["path"] = pa.array(relative_image_paths(self.meta["path"].tolist(), root), type=pa.string())
        for kind, matrix in self.features.items():
            flat = pa.array(np.ascontiguousarray(matrix, dtype=np.float32).reshape(-1))
            columns[kind] = pa.FixedSizeListArray.from_arrays(flat, matrix.shape[1])
        metadata = {b"fmn.alpha": str(self.alpha).encode(), **image_root_metadata(root, path)}
        if self.model_hash:
            metadata[MODEL_HASH_KEY] = self.model_hash.encode()
        if self.splits_fingerprint:
            metadata[SPLITS_KEY] = self.splits_fingerprint.encode()
        table = pa.table(columns).replace_schema_metadata(metadata)
        with atomic_write_path(path) as tmp:
            pq.write_table(table, tmp)
        return path

    def degenerate_rows(self) -> dict[str, dict[str, int]]:
        """Per descriptor kind, rows that are all zero or hold NaN / infinity.

        A zero row (the backbone's last ReLU silenced every channel, or a blank
        image) is equally far from everything, so it ranks the gallery at random;
        a non-finite row poisons every distance it enters.
        """
        report = {}
        for kind, matrix in self.features.items():
            finite = np.isfinite(matrix).all(axis=1)
            zero = finite & ~np.any(matrix != 0, axis=1)
            report[kind] = {"zero": int(zero.sum()), "non_finite": int((~finite).sum())}
        return report

    def degenerate_paths(self, limit: int = 3) -> list[str]:
        """A few image paths whose descriptor is zero or non-finite in some kind (for error messages)."""
        bad = np.zeros(len(self), dtype=bool)
        for matrix in self.features.values():
            bad |= ~np.isfinite(matrix).all(axis=1) | ~np.any(matrix != 0, axis=1)
        return self.meta["path"][bad].head(limit).tolist()

    @classmethod
    def load(cls, path: str | Path, root: str | Path | None = None) -> DescriptorTable:
        """Read a table written by :meth:`save`; image paths come back absolute.

        Evaluation needs no image, so a table whose images are not found (the
        dataset was not pulled, or moved: pass ``root``) still loads: its paths
        then point under the recorded root, with a warning naming it.
        """
        path = Path(path)
        table = read_parquet(path, "a descriptor table (fmn extract writes them)")
        missing = [c for c in META_COLUMNS if c not in table.column_names]
        if missing:
            raise FMNInputError(f"{path} is not a descriptor table: missing columns {missing}")
        meta = table.select(list(META_COLUMNS)).to_pandas()
        require_values(meta, list(META_COLUMNS), path)
        require_integers(meta, [name for name in META_COLUMNS if name in ("pid", "camid")], path)
        features = {}
        for kind in DESCRIPTOR_KINDS:
            if kind in table.column_names:
                column = table.column(kind).combine_chunks()
                if not (pa.types.is_fixed_size_list(column.type) and pa.types.is_floating(column.type.value_type)):
                    raise FMNInputError(f"{path}: column {kind!r} must hold one fixed-width float descriptor per row "
                                        f"(fixed_size_list<float32, D>, as fmn extract writes), not {column.type}")
                if column.null_count:
                    raise FMNInputError(f"{path}: column {kind!r} has {column.null_count} empty row(s)")
                width = column.type.list_size
                # Arrow's buffers are read-only; a writable copy keeps torch.from_numpy downstream quiet and safe
                features[kind] = np.array(column.flatten().to_numpy(zero_copy_only=False).reshape(-1, width))
        if not features:
            raise FMNInputError(f"{path} holds no descriptor column ({', '.join(DESCRIPTOR_KINDS)}): it is not a "
                                "descriptor table (a split table? run fmn extract on it first)")
        metadata = table.schema.metadata or {}
        try:
            alpha = float(metadata.get(b"fmn.alpha", b"0.5"))
            for key in (IMAGE_ROOT_KEY, MODEL_HASH_KEY, SPLITS_KEY):
                metadata.get(key, b"").decode()
        except (ValueError, UnicodeDecodeError) as exc:
            raise FMNInputError(f"{path}: its fmn.* schema metadata is damaged ({exc}); write the table again with "
                                "fmn extract") from exc
        relative = meta["path"].tolist()
        base = resolve_image_root(path, metadata, relative, root, strict=False)
        if base is None and IMAGE_ROOT_KEY in metadata:
            base = Path(metadata[IMAGE_ROOT_KEY].decode())
            warnings.warn(f"{path}: its images are not under {root or base} (the dataset root when it was written); "
                          "evaluation works, pictures will not. Pass root= where the dataset is now.", stacklevel=2)
        if base is not None:
            prefix = str(base).rstrip(os.sep) + os.sep
            meta["path"] = [prefix + name for name in relative]
        model_hash = metadata.get(MODEL_HASH_KEY, b"").decode() or None
        splits = metadata.get(SPLITS_KEY, b"").decode() or None
        return cls(meta, features, alpha, base, model_hash, splits, str(path))


def _refuse_mixed_datasets(tables: Sequence[DescriptorTable]) -> None:
    """Stop when the tables record different split tables or image roots, naming both."""
    for attribute, what in (("splits_fingerprint", "split tables"), ("image_root", "image roots")):
        known = [t for t in tables if getattr(t, attribute) is not None]
        other = next((t for t in known if getattr(t, attribute) != getattr(known[0], attribute)), None)
        if other is not None:
            first = known[0]
            raise FMNInputError(
                f"the descriptor tables come from different {what}: {first.describe()} from "
                f"{getattr(first, attribute)} and {other.describe()} from {getattr(other, attribute)}. Their pid "
                "numbers are not the same people, so the scores would mean nothing. Extract the query and gallery "
                "from one split table (fmn extract --splits ...), or pass --allow-mixed-datasets if the tables "
                "really share their identities")


def _features(model: FeatureMaskNetwork, images: torch.Tensor, flip: bool) -> tuple[torch.Tensor, torch.Tensor]:
    out = model(images)
    g, l = out.g.float(), out.l.float()  # noqa: E741
    if flip:
        mirrored = model(images.flip(-1))
        g, l = g + mirrored.g.float(), l + mirrored.l.float()  # noqa: E741
    return g, l


@torch.inference_mode()
def compute_features(model: FeatureMaskNetwork, cache: ImageCache, *, batch_size: int = 256,
                     device: torch.device | str = "cpu", flip: bool = False, progress: bool = True,
                     amp: bool | None = None) -> tuple[torch.Tensor, torch.Tensor, float]:
    """g and l for every cached image, in order; returns (g, l, images per second).

    Results stay on the device until the end (no per-batch synchronisation);
    bf16 autocast and channels_last on CUDA unless ``amp=False``.
    """
    device = torch.device(device)
    use_amp = device.type == "cuda" if amp is None else amp
    model = model.to(device).eval()
    channels_last = prefers_channels_last(model.arch, device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    batches = CachedBatches(cache, np.zeros(len(cache), dtype=np.int64), batch_size, shuffle=False, drop_last=False,
                            augment=False, device=device, channels_last=channels_last)
    gs, ls = [], []
    start = time.perf_counter()
    with tqdm(total=len(cache), desc="descriptors", unit="img", disable=not progress, leave=False) as bar:
        for images, _ in batches:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                g, l = _features(model, images, flip)  # noqa: E741
            gs.append(g)
            ls.append(l)
            bar.update(images.shape[0])
    g_all, l_all = torch.cat(gs).cpu(), torch.cat(ls).cpu()
    seconds = time.perf_counter() - start
    return g_all, l_all, len(cache) / max(seconds, 1e-9)


def extract_descriptors(checkpoint: str | Path | FeatureMaskNetwork, table: pd.DataFrame, *,
                        splits: Sequence[str] = ("query", "gallery"), batch_size: int = 256,
                        device: str | torch.device = "auto", flip: bool = False, alpha: float | None = None,
                        cache: ImageCache | None = None, progress: bool = True) -> tuple[DescriptorTable, float]:
    """Descriptors for the rows of ``table`` in ``splits``; returns the table and images/s."""
    loaded = load_descriptor_model(checkpoint)
    model, alpha = loaded.model, loaded.alpha if alpha is None else alpha
    rows = table[table["split"].isin(list(splits))].reset_index(drop=True)
    if rows.empty:
        raise FMNInputError(f"the split table has no rows in {list(splits)}")
    if cache is None or cache.paths != rows["path"].tolist():
        cache = ImageCache.build(rows["path"].tolist(), model.input_size)
    device = resolve_device(device)
    g, l, rate = compute_features(model, cache, batch_size=batch_size, device=device, flip=flip, progress=progress)  # noqa: E741
    features = {kind: value.numpy() for kind, value in descriptors_from_features(g, l, alpha).items()}
    root = table.attrs.get(IMAGE_ROOT_ATTR)
    descriptors = DescriptorTable(rows[list(META_COLUMNS)].copy(), features, alpha, Path(root) if root else None,
                                  loaded.model_hash, split_table_fingerprint(table))
    counts = descriptors.degenerate_rows()
    if any(c["zero"] or c["non_finite"] for c in counts.values()):
        warnings.warn(f"degenerate descriptors (all-zero or non-finite rows per kind): {counts}; e.g. "
                      f"{descriptors.degenerate_paths()}. These images rank the gallery at random: check the "
                      "checkpoint and that the input size is not too small for the backbone.", stacklevel=2)
    return descriptors, rate


def extraction_throughput(checkpoint: str | Path, cache: ImageCache, batch_size: int, device: torch.device | str,
                          repeats: int = 2) -> float:
    """Steady-state images/s of descriptor extraction (the first pass is a warm-up)."""
    model = load_descriptor_model(checkpoint).model
    rates = [compute_features(model, cache, batch_size=batch_size, device=device, progress=False)[2]
             for _ in range(max(2, repeats))]
    return float(np.median(rates[1:]))


@dataclass
class DescriptorModel:
    """A trained FMN ready to give descriptors: the network, eq. (6)'s alpha and the weights' hash."""

    model: FeatureMaskNetwork
    alpha: float
    model_hash: str


def load_descriptor_model(checkpoint: str | Path | FeatureMaskNetwork) -> DescriptorModel:
    """The stage-2 network of ``fmn.pt`` (a stage-1 ``grn.pt`` has no LAN and is refused)."""
    if isinstance(checkpoint, FeatureMaskNetwork):
        return DescriptorModel(checkpoint, 0.5, weights_fingerprint(checkpoint.state_dict()))
    state = load_checkpoint(checkpoint)
    if state["stage"] != 2:
        raise FMNInputError(f"{checkpoint} is a stage-{state['stage']} checkpoint; descriptors need the trained FMN "
                            "(stage 2, fmn.pt), which holds both the GRN and the LAN")
    if not state["complete"]:
        raise FMNInputError(f"{checkpoint} is a partial checkpoint (epoch {state['epoch']} of "
                            f"{state['config'].get('stage2_epochs', '?')}, kept to resume training); use the finished "
                            "fmn.pt")
    return DescriptorModel(model_from_checkpoint(state, source=str(checkpoint)),
                           float(state["config"].get("alpha", 0.5)), weights_fingerprint(state["model"]))
