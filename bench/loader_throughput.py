"""Images/s of the input pipeline: decode-once cache versus per-item decoding.

    python -m bench.loader_throughput --preset small
    python -m bench.loader_throughput --root /data/Market-1501 --dataset market1501

For each input size (256x128, the re-ID default, and 224x224, the paper's)
it measures: decoding a split into an ImageCache once; batches from the
cache with and without the paper's augmentation (flip + crop); and a
torch DataLoader that decodes every item each epoch (the usual torchvision
pipeline), with and without augmentation. Prints a table, writes JSON.
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

from fmn_core.data import read_dataset
from fmn_core.data.loading import CachedBatches, ImageCache, ReIDImageDataset, flip_and_crop, normalize

SIZES = [(256, 128), (224, 224)]


def time_batches(batches, limit: int) -> tuple[int, float]:
    """Images and seconds for up to ``limit`` images from an iterable of batches."""
    seen, start = 0, time.perf_counter()
    for images, _ in batches:
        seen += images.shape[0]
        if seen >= limit:
            break
    return seen, time.perf_counter() - start


def streaming(dataset: ReIDImageDataset, batch_size: int, workers: int, augment: bool, device: torch.device):
    """Batches from a DataLoader that decodes every item; its workers are started before the clock runs."""
    # spawned workers: forking this process, which already runs PyTorch's threads, can hand a worker a lock
    # that one of them held at the fork (the same hazard as in synthetic generation); persistent, so that a
    # new epoch does not start them again
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers,
                                         drop_last=True, persistent_workers=workers > 0,
                                         multiprocessing_context="spawn" if workers > 0 else None)
    next(iter(loader))  # start-up (each spawned worker imports torch, about 3 s) is not decoding: keep it out

    def timed():
        for _ in range(10_000):  # epochs; the persistent workers serve each new pass
            for images, labels in loader:
                images = images.to(device)
                if augment:
                    images = flip_and_crop(images, pad=10)
                yield normalize(images), labels

    return timed()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="small", help="synthetic preset to generate when --root is not given")
    parser.add_argument("--root", type=Path, help="an existing dataset root")
    parser.add_argument("--dataset", default="synthetic")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="decode threads / loader workers")
    parser.add_argument("--limit", type=int, default=4096, help="images timed per batch measurement")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--json", type=Path, default=Path("bench/results/loader_throughput.json"))
    args = parser.parse_args()

    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        root = args.root
        if root is None:
            from fmn_core.data.synthetic import generate_synthetic

            root = Path(tmp) / "synthetic"
            generate_synthetic(root, args.preset, workers=args.workers)
        table = read_dataset(args.dataset, root).table
        train = table[table.split == "train"]
        paths, labels = train.path.tolist(), train.label.to_numpy()

        rows = []
        for size in SIZES:
            start = time.perf_counter()
            cache = ImageCache.build(paths, size, workers=args.workers)
            seconds = time.perf_counter() - start
            rows.append({"size": f"{size[0]}x{size[1]}", "pipeline": "decode into cache (once)", "augment": False,
                         "images": len(paths), "seconds": seconds, "images_per_s": len(paths) / seconds})
            for augment in (False, True):
                batches = CachedBatches(cache, labels, args.batch_size, augment=augment, device=device)
                repeated = (b for _ in range(10_000) for b in batches)
                n, s = time_batches(repeated, args.limit)
                rows.append({"size": f"{size[0]}x{size[1]}", "pipeline": "batches from cache", "augment": augment,
                             "images": n, "seconds": s, "images_per_s": n / s})
                dataset = ReIDImageDataset(paths, labels, size)
                batches = streaming(dataset, args.batch_size, args.workers, augment, device)
                n, s = time_batches(batches, min(args.limit, 2048))
                rows.append({"size": f"{size[0]}x{size[1]}", "pipeline": f"DataLoader decode ({args.workers} workers)",
                             "augment": augment, "images": n, "seconds": s, "images_per_s": n / s})

    print(f"\nloader throughput on {device} ({platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs), batch {args.batch_size}, {len(paths)} train images\n")
    print(f"{'size':<9} {'pipeline':<34} {'augment':<8} {'images':>7} {'seconds':>8} {'images/s':>10}")
    for row in rows:
        print(f"{row['size']:<9} {row['pipeline']:<34} {row['augment']!s:<8} {row['images']:>7} "
              f"{row['seconds']:>8.2f} {row['images_per_s']:>10.0f}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"device": str(device), "cpus": os.cpu_count(), "batch_size": args.batch_size,
                                     "torch": torch.__version__, "rows": rows}, indent=2))
    print(f"\nwritten to {args.json}")


if __name__ == "__main__":
    main()
