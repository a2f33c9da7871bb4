"""The GPU check: one command for the first CUDA machine, under 5 minutes on one GPU.

    python -m bench.gpu_check                 # on CUDA: the paper recipe, Market-scale re-ranking, ONNX on CUDA
    python -m bench.gpu_check --dry-run       # anywhere: the same path at tiny sizes (the tests run this)

Rows: stage 1 and stage 2 of the ``paper`` recipe (ResNet-50, 256x128, bf16 autocast and
channels_last on CUDA) through ``train_stage1``/``train_stage2`` themselves, for ``--steps``
steps per stage on random images held in memory (the first epoch is a warm-up); descriptor
extraction; k-reciprocal re-ranking from random features at Market-1501 scale (3,368 x
15,913) on the device; and the ONNX export (its own CPU parity check) run again with
onnxruntime's CUDA execution provider against PyTorch on the device. Each row is reported
against a target for an H100-class GPU (stage 1 >= 5,000 images/s, extraction >= 15,000
images/s, re-ranking < 1 s); the targets are reported, not asserted. Prints a table and
writes JSON with the device name.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from fmn_core.utils.machine import cpu_model

TARGETS = {"stage 1": (">=", 5000.0), "extraction": (">=", 15000.0), "re-ranking": ("<", 1.0)}
FULL = {"height": 256, "width": 128, "batch": 256, "identities": 751, "rerank": (3368, 15913, 751)}
DRY = {"height": 64, "width": 32, "batch": 8, "identities": 4, "rerank": (60, 300, 30)}


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_model()} (CPU, {os.cpu_count()} logical)"


def random_training_set(count: int, identities: int, size: tuple[int, int], seed: int = 0):
    """A split table and an in-memory image cache of random pixels: speed does not depend on what is drawn."""
    from fmn_core.data.loading import ImageCache

    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (count, 3, *size), dtype=torch.uint8, generator=generator)
    pids = np.arange(count) % identities
    paths = [f"random/{i:06d}.jpg" for i in range(count)]
    table = pd.DataFrame({"path": paths, "pid": pids, "camid": np.arange(count) % 2, "split": "train",
                          "label": pids})
    return table, ImageCache(images, paths)


def timed_rerank(shape: tuple[int, int, int], device: torch.device) -> float:
    from bench.rerank_speed import make_features  # identity centres plus noise, normalised
    from fmn_core.retrieval.reranking import re_ranking_features

    query, gallery, *_ = make_features(*shape, 2048 if shape[0] > 1000 else 64)
    re_ranking_features(query[:50], gallery[:200], device=device)  # warm-up: CUDA context and kernels
    start = time.perf_counter()
    out = re_ranking_features(query, gallery, device=device)
    seconds = time.perf_counter() - start
    if out.shape != (shape[0], shape[1]) or not np.isfinite(out).all():
        raise RuntimeError(f"re-ranking gave {out.shape} or non-finite distances")
    return seconds


def onnx_on_device(checkpoint: Path, out: Path, device: torch.device, size: tuple[int, int]) -> dict:
    """Export (with its parity check against PyTorch on the CPU), then run the device's provider on it."""
    import onnxruntime as ort

    from fmn_core.data.loading import normalize
    from fmn_core.export.onnx_export import check_images, export_onnx

    export = export_onnx(checkpoint, out, dynamic_batch=True)
    provider = "CUDAExecutionProvider" if device.type == "cuda" else "CPUExecutionProvider"
    if provider not in ort.get_available_providers():
        return {"cpu_parity_passed": export.parity.passed, "provider": provider,
                "skipped": f"onnxruntime {ort.__version__} has no {provider} (install onnxruntime-gpu)"}
    images = normalize(check_images(size, count=16))
    session = ort.InferenceSession(str(out), providers=[provider])
    got = session.run(None, {session.get_inputs()[0].name: images.numpy()})[0]
    cpu = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    cpu_got = cpu.run(None, {cpu.get_inputs()[0].name: images.numpy()})[0]
    # the export's own check compared PyTorch with the CPU provider; this compares the device's provider with that
    return {"cpu_parity_passed": export.parity.passed, "cpu_parity_max_abs": export.parity.as_dict().get("max_abs"),
            "provider": provider, "max_abs_vs_cpu_provider": float(np.abs(got - cpu_got).max())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="tiny sizes on whatever device there is")
    parser.add_argument("--steps", type=int, default=None, help="steps per stage (default 300, dry run 4)")
    parser.add_argument("--json", type=Path, default=Path("bench/results/gpu_check.json"))
    args = parser.parse_args()

    from bench.train_throughput import steady_rate
    from fmn_core.engine import preset, train_stage1, train_stage2
    from fmn_core.retrieval.descriptors import extraction_throughput

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type != "cuda" and not args.dry_run:
        parser.error("no CUDA device here: the check is for a GPU; --dry-run runs its path at tiny sizes")
    sizes = DRY if args.dry_run else FULL
    steps = args.steps or (4 if args.dry_run else 300)
    epochs = 2 if args.dry_run else 3  # the first epoch is the warm-up
    count = sizes["batch"] * max(1, steps // epochs)
    config = preset("paper", pretrained="none", input_height=sizes["height"], input_width=sizes["width"],
                    batch_size=sizes["batch"], stage1_epochs=epochs, stage2_epochs=epochs, stage1_lr=0.01,
                    stage2_lr=0.01, stage1_lr_drop_epoch=epochs, stage2_lr_drop_epoch=epochs, device=device.type)
    table, cache = random_training_set(count, sizes["identities"], config.input_size)
    rows: list[dict] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        first = train_stage1(table, config, run, progress=False, cache=cache)
        rows.append({"what": "stage 1", "value": steady_rate(first.history), "unit": "images/s"})
        second = train_stage2(table, config, first.checkpoint, run, progress=False, cache=cache)
        rows.append({"what": "stage 2", "value": steady_rate(second.history), "unit": "images/s"})
        rows.append({"what": "extraction", "value": extraction_throughput(second.checkpoint, cache,
                                                                          sizes["batch"] * 2, device, repeats=3),
                     "unit": "images/s"})
        rows.append({"what": "re-ranking", "value": timed_rerank(sizes["rerank"], device), "unit": "s",
                     "shape": list(sizes["rerank"][:2])})
        onnx = onnx_on_device(second.checkpoint, Path(tmp) / "fmn.onnx", device, config.input_size)
    for row in rows:
        if row["what"] in TARGETS:
            op, target = TARGETS[row["what"]]
            row["target"] = f"{op} {target:g}"
            row["meets_target"] = row["value"] >= target if op == ">=" else row["value"] < target
    name = device_name(device)
    precision = "bf16 autocast + channels_last" if device.type == "cuda" else "float32"
    print(f"\nGPU check{' (dry run)' if args.dry_run else ''} on {name}: {config.arch} at "
          f"{sizes['height']}x{sizes['width']}, batch {sizes['batch']}, {steps} steps per stage, {precision}, "
          f"torch {torch.__version__}\n")
    print(f"{'what':<12} {'value':>12} {'unit':<9} {'target (H100-class)':>20}")
    for row in rows:
        flag = "" if "target" not in row else f"{row['target']} ({'met' if row['meets_target'] else 'not met'})"
        print(f"{row['what']:<12} {row['value']:>12.2f} {row['unit']:<9} {flag:>20}")
    print(f"onnx         {json.dumps(onnx)}")
    report = {"device": name, "dry_run": args.dry_run, "torch": torch.__version__, "cuda": torch.version.cuda,
              "arch": config.arch, "input": [sizes["height"], sizes["width"]], "batch_size": sizes["batch"],
              "steps_per_stage": steps, "precision": precision, "rows": rows, "onnx": onnx,
              "seconds": time.perf_counter() - started}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))
    print(f"\nwritten to {args.json} in {report['seconds']:.0f} s")


if __name__ == "__main__":
    main()
