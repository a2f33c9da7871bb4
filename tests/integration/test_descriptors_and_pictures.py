"""Descriptor tables (eq. 6), the feature extractor, and the pictures (Figures 1 and 4, CMC, training)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from fmn_core.data import load_split_table, read_dataset
from fmn_core.data.loading import decode_image
from fmn_core.data.schema import IMAGE_ROOT_ATTR
from fmn_core.data.synthetic import generate_synthetic
from fmn_core.engine import load_checkpoint, model_from_checkpoint, preset, train_stage1, train_stage2
from fmn_core.engine.progress import read_metrics_log
from fmn_core.models.backbone import feature_dim
from fmn_core.retrieval import DescriptorTable, FeatureExtractor, extract_descriptors
from fmn_core.retrieval.results import evaluate_descriptors, results_markdown
from fmn_core.viz import plot_cmc, plot_heatmaps, plot_ranked_lists, plot_training_curves
from fmn_core.viz.ranked_lists import RankedRow


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("pics") / "synthetic"
    generate_synthetic(root, "tiny")
    table = read_dataset("synthetic", root).table
    out = tmp_path_factory.mktemp("run")
    config = preset("cpu", batch_size=16, stage1_epochs=2, stage2_epochs=2,  # the recipe's 128x64 input
                    stage1_lr=0.02, stage2_lr=0.02, decode_workers=2)
    first = train_stage1(table, config, out, progress=False)
    second = train_stage2(table, config, first.checkpoint, out, progress=False)
    descriptors, _ = extract_descriptors(second.checkpoint, table, progress=False)
    return table, out, second.checkpoint, descriptors, config


def test_descriptor_table_holds_table_1_descriptors(trained, tmp_path):
    table, _, _, descriptors, config = trained
    expected_rows = int(table.split.isin(["query", "gallery"]).sum())
    width, alpha = feature_dim(config.arch), config.alpha  # the backbone's pooled width; eq. (6)'s weight
    assert len(descriptors) == expected_rows
    assert descriptors.features["grn"].shape == (expected_rows, width)
    assert descriptors.features["fmn"].shape == (expected_rows, 2 * width)
    assert np.allclose(np.linalg.norm(descriptors.features["grn"], axis=1), 1, atol=1e-5)
    # eq. (6): the GRN half has norm alpha, the LAN half 1 - alpha
    fmn = descriptors.features["fmn"]
    assert np.allclose(np.linalg.norm(fmn[:, :width], axis=1), alpha, atol=1e-5)
    assert np.allclose(fmn[:, width:], (1 - alpha) * descriptors.features["lan"], atol=1e-6)
    path = descriptors.save(tmp_path / "d.parquet")
    again = DescriptorTable.load(path)
    assert again.meta.equals(descriptors.meta) and again.alpha == alpha
    for kind in ("grn", "lan", "fmn"):
        assert np.array_equal(again.features[kind], descriptors.features[kind])
    assert set(again.subset("query").meta.split) == {"query"}


def test_zero_and_non_finite_descriptors_are_counted_and_warned_about(trained):
    table, _, checkpoint, descriptors, _ = trained
    assert all(c == {"zero": 0, "non_finite": 0} for c in descriptors.degenerate_rows().values())
    broken = DescriptorTable(descriptors.meta, {k: v.copy() for k, v in descriptors.features.items()})
    broken.features["grn"][0] = 0
    broken.features["lan"][1, 3] = np.nan
    assert broken.degenerate_rows()["grn"] == {"zero": 1, "non_finite": 0}
    assert broken.degenerate_rows()["lan"] == {"zero": 0, "non_finite": 1}
    assert broken.degenerate_paths() == broken.meta.path[:2].tolist()
    silenced = model_from_checkpoint(load_checkpoint(checkpoint))
    for module in silenced.modules():  # every BatchNorm outputs 0: the ReLU6 network gives g = l = 0
        if isinstance(module, torch.nn.BatchNorm2d):
            torch.nn.init.zeros_(module.weight)
            torch.nn.init.zeros_(module.bias)
    with pytest.warns(UserWarning, match="degenerate descriptors"):
        zero, _ = extract_descriptors(silenced, table, progress=False, device="cpu")
    assert zero.degenerate_rows()["grn"]["zero"] == len(zero)


def test_a_moved_dataset_and_its_tables_stay_usable(trained, tmp_path):
    """Tables store image paths relative to the dataset root; moved together with the data, they still work."""
    table, _, checkpoint, _, _ = trained
    project = tmp_path / "a"
    shutil.copytree(table.attrs[IMAGE_ROOT_ATTR], project / "data" / "synthetic")
    loaded = read_dataset("synthetic", project / "data" / "synthetic")
    out = project / "artifacts" / "synthetic"
    loaded.save(out / "splits.parquet")
    extracted, _ = extract_descriptors(checkpoint, loaded.table, progress=False)
    assert extracted.image_root == project / "data" / "synthetic"
    for split in ("query", "gallery"):
        extracted.subset(split).save(out / f"{split}_descriptors.parquet")
    for name in ("splits.parquet", "query_descriptors.parquet", "gallery_descriptors.parquet"):
        assert not any(p.startswith("/") for p in pq.read_table(out / name).column("path").to_pylist()), name
    before = results_markdown(evaluate_descriptors(extracted, rerank=True))

    shutil.move(project, tmp_path / "b")
    root, out = tmp_path / "b" / "data" / "synthetic", tmp_path / "b" / "artifacts" / "synthetic"
    splits = load_split_table(out / "splits.parquet")
    assert splits.drop(columns="path").equals(loaded.table.drop(columns="path"))
    assert all(p.startswith(f"{root}/") and Path(p).is_file() for p in splits.path)
    tables = [DescriptorTable.load(out / f"{split}_descriptors.parquet") for split in ("query", "gallery")]
    assert all(t.image_root == root and all(Path(p).is_file() for p in t.meta.path) for t in tables)
    both = DescriptorTable.concat(tables)
    assert both.meta.drop(columns="path").equals(extracted.meta.drop(columns="path"))
    assert all(np.array_equal(both.features[k], extracted.features[k]) for k in extracted.features)
    cli = subprocess.run([sys.executable, "-m", "fmn_core", "evaluate", "query_descriptors.parquet",
                          "gallery_descriptors.parquet", "--rerank"], cwd=out, capture_output=True, text=True,
                         timeout=300)
    assert cli.returncode == 0, cli.stderr
    assert before in cli.stdout and "not under" not in cli.stderr  # the same numbers, images found


def test_flip_averaging_is_mirror_symmetric(trained, tmp_path):
    _, _, checkpoint, _, _ = trained
    extractor = FeatureExtractor(checkpoint, device="cpu")
    image = np.random.default_rng(0).integers(0, 255, (64, 32, 3), dtype=np.uint8)
    plain = extractor([image])
    flipped = extractor([image], flip=True)
    mirror = extractor([image[:, ::-1].copy()], flip=True)
    assert not torch.allclose(plain, flipped)
    assert torch.allclose(flipped, mirror, atol=1e-5)


def test_extractor_on_paths_matches_the_table(trained):
    _, _, checkpoint, descriptors, _ = trained
    extractor = FeatureExtractor(checkpoint, device="cpu")
    paths = descriptors.meta.path[:3].tolist()
    from_paths = extractor(paths, kind="grn")
    assert np.allclose(from_paths.numpy(), descriptors.features["grn"][:3], atol=1e-4)
    arrays = [decode_image(p, (128, 64)).transpose(1, 2, 0) for p in paths]
    assert torch.allclose(extractor(arrays, kind="lan"), extractor(paths, kind="lan"), atol=1e-5)
    with pytest.raises(ValueError, match="HxWx3"):
        extractor([np.zeros((4, 4))])


def test_stage_1_checkpoint_cannot_make_descriptors(trained):
    table, out, _, _, _ = trained
    with pytest.raises(ValueError, match="stage-1 checkpoint; descriptors need the trained FMN"):
        extract_descriptors(out / "grn.pt", table, progress=False)


def test_results_table_and_pictures(trained, tmp_path):
    _, out, checkpoint, descriptors, _ = trained
    results = evaluate_descriptors(descriptors, rerank=True)
    assert list(results) == ["GRN", "LAN", "FMN", "FMN + re-ranking"]
    markdown = results_markdown(results)
    assert len(markdown.splitlines()) == 2 + len(results)  # header, separator, a row per method
    assert "| FMN + re-ranking |" in markdown

    query, gallery = descriptors.subset("query"), descriptors.subset("gallery")
    rows = [RankedRow("FMN", query.meta.path[i], gallery.meta.path[:10].tolist(), [i % 2 == 0] * 10) for i in range(2)]
    model = model_from_checkpoint(load_checkpoint(checkpoint))
    pictures = [
        plot_cmc(results, tmp_path / "cmc.png"),
        plot_ranked_lists(rows, tmp_path / "ranked.png"),
        plot_heatmaps(model, query.meta.path[:4].tolist(), tmp_path / "heat.png"),
        plot_training_curves([read_metrics_log(out / "stage1_metrics.jsonl"),
                              read_metrics_log(out / "stage2_metrics.jsonl")], tmp_path / "train.png"),
    ]
    for picture in pictures:
        assert picture.stat().st_size > 5_000
        with Image.open(picture) as image:
            assert image.format == "PNG" and image.width > 200 and image.height > 150
            pixels = np.asarray(image.convert("L"))
            assert pixels.std() > 10  # something was drawn
    with pytest.raises(ValueError, match="no ranked rows"):
        plot_ranked_lists([], tmp_path / "none.png")
    assert not (tmp_path / "none.png").exists()
