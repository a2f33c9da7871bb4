"""Descriptor extraction speed: PyTorch against onnxruntime on the CPU, same model, same machine, same run.

    python -m bench.onnx_speed                     # Lite0 FMN at 128x64 (the cpu recipe) and ResNet-50 FMN at 256x128
    python -m bench.onnx_speed --archs efficientnet_lite0

The network is untrained (speed does not depend on the weights); both runtimes
get the same normalised batch, so decoding is excluded. PyTorch runs as
`FeatureExtractor` does (inference mode, channels_last for Lite0 on CPU);
onnxruntime runs the file `export_onnx` writes (dynamic batch, the FMN output
only) with its default CPU settings. Batches of 1 and 64, images per second
from the median of repeated runs after a warm-up. Prints a table, writes JSON.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from fmn_core.data.loading import normalize
from fmn_core.export.onnx_export import DescriptorGraph, check_images, export_onnx
from fmn_core.models import FeatureMaskNetwork
from fmn_core.models.backbone import prefers_channels_last
from fmn_core.utils.machine import machine_description

MODELS = {"efficientnet_lite0": ("res2", (128, 64)), "resnet50": ("pool1", (256, 128))}


def images_per_second(run, batch: int, seconds: float = 4.0) -> float:
    run()  # warm-up
    times = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(times) < 3:
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return batch / float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archs", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--out", type=Path, default=Path("bench/results/onnx_speed.json"))
    args = parser.parse_args()
    rows = []
    for arch in args.archs:
        layer, size = MODELS[arch]
        torch.manual_seed(0)
        model = FeatureMaskNetwork(751, arch=arch, pretrained="none", masked_layer=layer, input_size=size).eval()
        with tempfile.TemporaryDirectory() as folder:
            exported = export_onnx(model, Path(folder) / "fmn.onnx", dynamic_batch=True)
            session = ort.InferenceSession(str(exported.path), providers=["CPUExecutionProvider"])
            size_mb = exported.size_bytes / 1e6
            graph = DescriptorGraph(model, 0.5, ("fmn",)).eval()
            if prefers_channels_last(arch, torch.device("cpu")):
                graph = graph.to(memory_format=torch.channels_last)
            for batch in args.batches:
                pixels = check_images(size, count=batch, seed=1)
                images = normalize(pixels, channels_last=prefers_channels_last(arch, torch.device("cpu")))
                feed = {"images": normalize(pixels).numpy()}

                def run_torch(graph=graph, images=images):
                    with torch.inference_mode():
                        graph(images)

                def run_onnx(session=session, feed=feed):
                    session.run(["fmn"], feed)

                pt, ox = images_per_second(run_torch, batch), images_per_second(run_onnx, batch)
                rows.append({"arch": arch, "input": f"{size[0]}x{size[1]}", "batch": batch,
                             "pytorch_img_s": round(pt, 1), "onnxruntime_img_s": round(ox, 1),
                             "onnx_vs_pytorch": round(ox / pt, 2), "onnx_mb": round(size_mb, 1),
                             "parity_max_abs": exported.parity.max_abs["fmn"]})
    print(f"descriptor extraction on the CPU: {machine_description()}, torch {torch.__version__}, onnxruntime "
          f"{ort.__version__}\n")
    print("| model | input | batch | PyTorch img/s | onnxruntime img/s | ONNX / PyTorch |\n"
          "|---|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['arch']} FMN | {r['input']} | {r['batch']} | {r['pytorch_img_s']} | {r['onnxruntime_img_s']} | "
              f"{r['onnx_vs_pytorch']}x |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine_description(), "torch": torch.__version__,
                                    "onnxruntime": ort.__version__, "rows": rows}, indent=2))
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
