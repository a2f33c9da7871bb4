"""``FeatureExtractor``: descriptors for images, from a checkpoint or an exported ONNX file.

The same call, torchreid-style, whichever file holds the model::

    extractor = FeatureExtractor("runs/demo/fmn.pt")     # or "model.onnx" (fmn export)
    d = extractor(["a.jpg", "b.jpg"])                    # (2, 2 * feature width) eq. (6) descriptors
    g = extractor([array_hxwx3, pil_image], kind="grn")  # GRN-only descriptors

Preprocessing is shared: RGB, resized bilinearly to the model's input size,
ImageNet-normalised. An ONNX file records its input size and normalisation
in its metadata (:mod:`fmn_core.retrieval.onnx_format`), so both paths feed the
network the same numbers.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.nn import functional as F

from fmn_core.data.loading import IMAGENET_MEAN, IMAGENET_STD, decode_image, normalize, to_rgb
from fmn_core.models.backbone import prefers_channels_last
from fmn_core.models.fmn import FeatureMaskNetwork, descriptors_from_features
from fmn_core.retrieval.descriptors import DESCRIPTOR_KINDS, load_descriptor_model
from fmn_core.retrieval.onnx_format import OnnxDescriptorMetadata, run_onnx
from fmn_core.utils.device import resolve_device
from fmn_core.utils.errors import FMNInputError, InputFileNotFoundError

ImageLike = str | Path | np.ndarray | Image.Image


class ImageReadError(FMNInputError):
    """An input image cannot be read or has the wrong shape."""


#: an input side below this many pixels, or an aspect ratio this many times off the model's, gets a note
SMALLEST_SIDE, ASPECT_FACTOR = 16, 4.0


def note_odd_size(name: str, width: int, height: int, size: tuple[int, int]) -> None:
    """Warn when an image is far too small, or far from the model's shape, for its descriptor to mean much.

    It is still ranked (a user may want to see what happens), but never without a word.
    """
    model_ratio = size[0] / size[1]
    ratio = height / max(width, 1)
    off = max(ratio / model_ratio, model_ratio / ratio)
    if min(width, height) < SMALLEST_SIDE or off > ASPECT_FACTOR:
        warnings.warn(f"{name} is {width}x{height} pixels; the model sees {size[1]}x{size[0]} person crops, so it "
                      f"is {'tiny' if min(width, height) < SMALLEST_SIDE else f'{off:.0f}x off their shape'} and its "
                      "ranking says little (is it a person crop?)", stacklevel=3)


def image_to_uint8(item: ImageLike, size: tuple[int, int]) -> torch.Tensor:
    """One image as RGB uint8 ``(3, H, W)`` at ``size``: a path, an HxWx3 array or a PIL image."""
    if isinstance(item, (str, Path)):
        try:  # missing, truncated, not an image, or a header claiming a decompression bomb: one message
            with Image.open(item) as header:  # the header alone: the size, before decoding
                note_odd_size(str(item), *header.size, size)
            return torch.from_numpy(decode_image(item, size))
        except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as exc:
            raise ImageReadError(f"cannot read image {item}: {type(exc).__name__}: {exc}") from exc
    if isinstance(item, Image.Image):
        item = np.asarray(to_rgb(item))
    array = np.asarray(item)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ImageReadError(f"expected an image path, a PIL image or an HxWx3 array, got shape {array.shape}")
    note_odd_size(f"an image of shape {array.shape}", array.shape[1], array.shape[0], size)
    tensor = torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1))).unsqueeze(0).float()
    resized = F.interpolate(tensor, size=size, mode="bilinear", align_corners=False)
    return resized.round().clamp(0, 255).to(torch.uint8)[0]


class _TorchModel:
    """A stage-2 checkpoint (or an FMN in memory) run by PyTorch."""

    def __init__(self, source: str | Path | FeatureMaskNetwork, device: str | torch.device, alpha: float | None):
        loaded = load_descriptor_model(source)
        self.device = resolve_device(device)
        self.model = loaded.model.to(self.device).eval()
        self.channels_last = prefers_channels_last(self.model.arch, self.device)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.alpha = loaded.alpha if alpha is None else alpha
        self.model_hash, self.input_size = loaded.model_hash, self.model.input_size
        self.mean, self.std, self.kinds = IMAGENET_MEAN, IMAGENET_STD, DESCRIPTOR_KINDS

    def run(self, batch: torch.Tensor, kind: str, flip: bool) -> torch.Tensor:
        batch = batch.to(self.device)
        if self.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        out = self.model(batch)
        g, l = out.g.float(), out.l.float()  # noqa: E741
        if flip:
            mirrored = self.model(batch.flip(-1))
            g, l = g + mirrored.g.float(), l + mirrored.l.float()  # noqa: E741
        return descriptors_from_features(g, l, self.alpha, (kind,))[kind].cpu()


class _OnnxModel:
    """A file written by ``fmn export``, run by onnxruntime on the CPU."""

    def __init__(self, path: Path, alpha: float | None, threads: int | None = None):
        import onnxruntime as ort

        if not path.is_file():
            raise InputFileNotFoundError(f"ONNX model not found: {path}")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for damaged files
            raise FMNInputError(f"{path} is not a loadable ONNX model ({type(exc).__name__}: {exc})") from exc
        self.meta = OnnxDescriptorMetadata.from_props(self.session.get_modelmeta().custom_metadata_map, str(path))
        if alpha is not None and alpha != self.meta.alpha:
            raise FMNInputError(f"{path} was exported with alpha = {self.meta.alpha} (eq. 6 is inside the graph); "
                                f"alpha = {alpha} needs a new export")
        self.alpha, self.model_hash, self.input_size = self.meta.alpha, self.meta.model_hash, self.meta.input_size
        self.mean, self.std, self.kinds = self.meta.mean, self.meta.std, self.meta.outputs
        self.input_name = self.session.get_inputs()[0].name
        self.path = path

    def run(self, batch: torch.Tensor, kind: str, flip: bool) -> torch.Tensor:
        if flip:
            raise FMNInputError(f"flip averaging adds the unnormalised features of the mirrored image, which "
                                f"{self.path} does not output; use the checkpoint, or flip=False")
        return torch.from_numpy(run_onnx(self.session, [kind], batch.numpy(), self.meta.batch_size,
                                         self.input_name)[0])


class FeatureExtractor:
    """Descriptors (GRN, LAN or FMN eq. 6) for image paths, HxWx3 uint8 arrays or PIL images.

    ``model``: a stage-2 checkpoint (``fmn.pt``), a :class:`FeatureMaskNetwork`, or an
    ``.onnx`` file from ``fmn export`` (run by onnxruntime on the CPU; ``device`` is ignored).
    """

    def __init__(self, model: str | Path | FeatureMaskNetwork, device: str | torch.device = "auto",
                 alpha: float | None = None, batch_size: int = 64):
        if isinstance(model, (str, Path)) and Path(model).suffix.lower() == ".onnx":
            self._backend: _TorchModel | _OnnxModel = _OnnxModel(Path(model), alpha)
            self.backend = "onnxruntime"
        else:
            self._backend = _TorchModel(model, device, alpha)
            self.backend = "pytorch"
        self.batch_size = max(1, int(batch_size))

    @property
    def input_size(self) -> tuple[int, int]:
        return self._backend.input_size

    @property
    def alpha(self) -> float:
        return self._backend.alpha

    @property
    def model_hash(self) -> str:
        """The hash of the weights: equal for a checkpoint and its ONNX export."""
        return self._backend.model_hash

    @property
    def kinds(self) -> tuple[str, ...]:
        """The descriptors this model gives (an ONNX export may hold only ``fmn``)."""
        return tuple(self._backend.kinds)

    def preprocess(self, images: Sequence[ImageLike]) -> torch.Tensor:
        """The network's input for ``images``: float32 ``(N, 3, H, W)``, normalised."""
        pixels = torch.stack([image_to_uint8(item, self.input_size) for item in images])
        return normalize(pixels, self._backend.mean, self._backend.std)

    @torch.inference_mode()
    def __call__(self, images: Sequence[ImageLike], kind: str = "fmn", flip: bool = False) -> torch.Tensor:
        if kind not in self.kinds:
            raise FMNInputError(f"kind must be one of {self.kinds} for this model, got {kind!r}")
        if isinstance(images, (str, Path, np.ndarray, Image.Image)) and not (
                isinstance(images, np.ndarray) and images.ndim == 4):
            images = [images]
        if len(images) == 0:
            raise FMNInputError("no image given")
        parts = [self._backend.run(self.preprocess(images[start:start + self.batch_size]), kind, flip)
                 for start in range(0, len(images), self.batch_size)]
        return torch.cat(parts)
