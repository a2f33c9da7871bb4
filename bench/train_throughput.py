"""Training and extraction throughput of the FMN code next to a plain torchvision ResNet.

    python -m bench.train_throughput                                   # CPU: ResNet-50, 256x128, batch 32
    python -m bench.train_throughput --device cuda --batch-size 256 --preset market --epochs 3

Rows (images/s, steady state: the first epoch is a warm-up and not counted):

* ``torchvision resnet fwd/bwd``: a plain torchvision ResNet with an identity
  head, cross-entropy and SGD, fed by the same cached batches; the yardstick.
* ``FMN stage 1``: ``train_stage1`` itself (GRN fine-tuning, eq. 4).
* ``FMN stage 2``: ``train_stage2`` itself (frozen GRN forward + MN + LAN, eq. 4 + 5).
* ``descriptor extraction``: ``extract_descriptors`` (GRN + LAN + eq. 6, no gradients).

The same settings as training are used for every row: bf16 autocast and
channels_last on CUDA, float32 on the CPU. Prints a table, writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch
import torchvision

from fmn_core.data import read_dataset
from fmn_core.data.loading import CachedBatches, ImageCache
from fmn_core.data.synthetic import generate_synthetic
from fmn_core.engine import preset, train_stage1, train_stage2


def steady_rate(history: list[dict]) -> float:
    """Images/s over the epochs after the first."""
    rows = history[1:] or history
    return sum(r["images"] for r in rows) / sum(r["seconds"] for r in rows)


def baseline(cache: ImageCache, labels, args, device: torch.device, amp: torch.dtype | None,
             channels_last: bool, num_classes: int) -> float:
    model = getattr(torchvision.models, args.arch)(weights=None, num_classes=num_classes).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    batches = CachedBatches(cache, labels, args.batch_size, device=device, channels_last=channels_last)
    rates = []
    for epoch in range(args.epochs):
        batches.set_epoch(epoch)
        start, seen = time.perf_counter(), 0
        for images, targets in batches:
            with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
                loss = torch.nn.functional.cross_entropy(model(images).float(), targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            seen += images.shape[0]
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        rates.append((seen, time.perf_counter() - start))
    rows = rates[1:] or rates
    return sum(n for n, _ in rows) / sum(s for _, s in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="resnet50")
    parser.add_argument("--height", type=int, default=256)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--preset", default="tiny", help="synthetic dataset preset (tiny on CPU, market on GPU)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per row; the first is a warm-up")
    parser.add_argument("--json", type=Path, default=Path("bench/results/train_throughput.json"))
    args = parser.parse_args()

    device = torch.device(args.device)
    amp = torch.bfloat16 if device.type == "cuda" else None
    channels_last = device.type == "cuda"
    config = preset("paper", arch=args.arch, pretrained="none", input_height=args.height, input_width=args.width,
                    batch_size=args.batch_size, stage1_epochs=args.epochs, stage2_epochs=args.epochs,
                    stage1_lr=0.01, stage2_lr=0.01, device=args.device)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "synthetic"
        generate_synthetic(root, args.preset, workers=os.cpu_count() or 1)
        table = read_dataset("synthetic", root).table
        train = table[table.split == "train"]
        cache = ImageCache.build(train.path.tolist(), config.input_size)
        num_classes = train.pid.nunique()

        rate = baseline(cache, train.label.to_numpy(), args, device, amp, channels_last, num_classes)
        rows.append(("torchvision resnet fwd/bwd", rate))
        first = train_stage1(table, config, Path(tmp) / "run", progress=False, cache=cache)
        rows.append(("FMN stage 1 (GRN)", steady_rate(first.history)))
        second = train_stage2(table, config, first.checkpoint, Path(tmp) / "run", progress=False, cache=cache)
        rows.append(("FMN stage 2 (MN + LAN, GRN frozen)", steady_rate(second.history)))
        try:
            from fmn_core.retrieval.descriptors import extraction_throughput
        except ImportError:
            extraction_throughput = None
        if extraction_throughput is not None:
            rows.append(("descriptor extraction", extraction_throughput(second.checkpoint, cache, args.batch_size * 4,
                                                                       device, repeats=args.epochs)))

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else \
        f"{platform.processor() or platform.machine()} CPU x{os.cpu_count()}"
    base = rows[0][1]
    print(f"\n{args.arch} at {args.height}x{args.width}, batch {args.batch_size}, on {name} "
          f"({'bf16 + channels_last' if amp else 'float32'}), {len(train)} training images\n")
    print(f"{'what':<38} {'images/s':>10} {'vs torchvision':>15}")
    for what, rate in rows:
        print(f"{what:<38} {rate:>10.1f} {rate / base:>14.2f}x")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({
        "device": name, "arch": args.arch, "input": [args.height, args.width], "batch_size": args.batch_size,
        "precision": "bf16" if amp else "float32", "torch": torch.__version__, "train_images": len(train),
        "rows": [{"what": what, "images_per_s": rate, "relative_to_torchvision": rate / base} for what, rate in rows],
    }, indent=2))
    print(f"\nwritten to {args.json}")


if __name__ == "__main__":
    main()
