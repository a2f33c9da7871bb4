"""Feeding images to the network: decode once, then batch from memory.

JPEG decoding costs far more than a ResNet step on a GPU, so the training and
extraction loops read from an :class:`ImageCache`: every image of a split
decoded once, resized to the network's input size and held as one uint8
tensor ``(N, 3, H, W)`` (about 98 kB per image at 256x128: 3.2 GB for all of
Market-1501). Batches are gathered from it by index, moved to the device as
uint8 (a quarter of the bytes of float32) and normalised there.

Augmentation is the paper's (section 4.2): horizontal flip and random
cropping. Cropping follows the usual re-ID recipe of padding the image by
``pad`` pixels and cropping back to its size at a random offset; both are one
index gather over the whole batch, so they run on the GPU too. Random erasing
(an option, not in the paper) is one masked fill over the batch likewise.

Batches are random (the paper's), or, with ``instances_per_identity = K``,
P x K identity batches (:func:`identity_batches`) for the triplet loss.

For data that does not fit in memory, :class:`ReIDImageDataset` decodes per
item for a ``torch.utils.data.DataLoader``; the same batch augmentation
applies after collation.
"""

from __future__ import annotations

import hashlib
import math
import os
import struct
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from fmn_core.utils.errors import FMNInputError
from fmn_core.utils.normalization import IMAGENET_MEAN, IMAGENET_STD

#: Integer modes wider than 8 bits (16-bit grayscale PNG, TIFF): ``convert("RGB")`` would clip them to white.
_WIDE_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def to_rgb(image: Image.Image, path: str | os.PathLike = "image") -> Image.Image:
    """An opened image as 8-bit RGB the right way up: EXIF orientation applied, 16-bit samples scaled down.

    A camera JPEG stores its pixels sideways and an EXIF tag saying so; a 16-bit
    grayscale PNG holds values up to 65535. Both must be corrected, not passed on
    as a sideways person or an all-white image.
    """
    try:
        image = ImageOps.exif_transpose(image)
    except (SyntaxError, ValueError, KeyError, TypeError, struct.error) as exc:  # a damaged EXIF block, not pixels
        warnings.warn(f"{path}: unreadable EXIF orientation ({exc}); the image is used as stored", stacklevel=2)
    if image.mode in _WIDE_MODES:
        samples = np.asarray(image, dtype=np.int64)
        top = 65535 if image.mode != "I" or samples.max(initial=0) > 255 else 255
        image = Image.fromarray(np.clip(samples * 255 // top, 0, 255).astype(np.uint8), "L")
    elif image.mode == "F":
        raise FMNInputError(f"{path} holds floating-point samples (mode F), whose range is unknown; save it as an "
                            "8- or 16-bit image")
    return image.convert("RGB")


def decode_image(path: str | os.PathLike, size: tuple[int, int]) -> np.ndarray:
    """Decode one image to RGB uint8 ``(3, H, W)`` at ``size = (H, W)`` (bilinear)."""
    height, width = size
    try:
        opened = Image.open(path)
    except Image.DecompressionBombError as exc:  # not an OSError: name the file here
        raise FMNInputError(f"{path}: {exc}") from exc
    with opened as image:
        if image.format == "JPEG":
            image.draft("RGB", (width, height))  # lets libjpeg downscale while decoding
        image = to_rgb(image, path)
        if image.size != (width, height):
            image = image.resize((width, height), Image.BILINEAR)
        return np.ascontiguousarray(np.asarray(image, dtype=np.uint8).transpose(2, 0, 1))


def _default_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


@dataclass
class ImageCache:
    """Every image of a list decoded once into a uint8 tensor ``(N, 3, H, W)``."""

    images: torch.Tensor
    paths: list[str]

    @property
    def size(self) -> tuple[int, int]:
        return int(self.images.shape[2]), int(self.images.shape[3])

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @classmethod
    def build(cls, paths: Sequence[str], size: tuple[int, int], workers: int | None = None) -> ImageCache:
        """Decode ``paths`` with a thread pool (PIL releases the GIL while decoding)."""
        paths = [str(p) for p in paths]
        images = torch.empty((len(paths), 3, *size), dtype=torch.uint8)
        target = images.numpy()

        def fill(index: int) -> None:
            try:
                target[index] = decode_image(paths[index], size)
            except (OSError, ValueError) as exc:
                raise OSError(f"cannot decode image {paths[index]} (row {index}): {exc}") from exc

        with ThreadPoolExecutor(max_workers=workers or _default_workers()) as pool:
            list(pool.map(fill, range(len(paths)), chunksize=32))
        return cls(images, paths)

    @classmethod
    def load_or_build(cls, paths: Sequence[str], size: tuple[int, int], cache_dir: str | Path,
                      workers: int | None = None) -> ImageCache:
        """Reuse a decoded copy saved under ``cache_dir`` (keyed by paths, file sizes and size)."""
        from fmn_core.utils.atomic import atomic_write_path

        paths = [str(p) for p in paths]
        file = Path(cache_dir) / f"images-{cache_key(paths, size)}.npy"
        if file.is_file():
            array = np.load(file, mmap_mode="r")
            if array.shape == (len(paths), 3, *size):
                return cls(torch.from_numpy(np.array(array)), paths)
        cache = cls.build(paths, size, workers)
        with atomic_write_path(file) as tmp, open(tmp, "wb") as handle:
            np.save(handle, cache.images.numpy())
        return cache


def cache_key(paths: Sequence[str], size: tuple[int, int]) -> str:
    """A digest that changes when any path, file size or modification time changes."""
    digest = hashlib.sha1(f"{size}".encode())
    for path in paths:
        stat = os.stat(path)
        digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


class ReIDImageDataset(torch.utils.data.Dataset):
    """Per-item decoding for a DataLoader, when a split does not fit in memory."""

    def __init__(self, paths: Sequence[str], labels: Sequence[int], size: tuple[int, int]):
        if len(paths) != len(labels):
            raise FMNInputError(f"{len(paths)} paths but {len(labels)} labels")
        self.paths = [str(p) for p in paths]
        self.labels = torch.as_tensor(np.array(labels, dtype=np.int64))
        self.size = size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.from_numpy(decode_image(self.paths[index], self.size)), self.labels[index]


def flip_and_crop(images: torch.Tensor, pad: int, flip_prob: float = 0.5,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Random horizontal flip and pad-then-crop of a uint8 or float batch ``(B, C, H, W)``.

    One gather does both: each sample's column index runs forwards or
    backwards from a random offset into the zero-padded batch.
    """
    batch, _, height, width = images.shape
    device = images.device
    # Drawn where the generator lives (on the GPU for GPU batches: no host round trip).
    randoms = torch.rand((batch, 3), generator=generator, device=generator.device if generator else device)
    randoms = randoms.to(device)
    flips = randoms[:, 0] < flip_prob
    rows = torch.arange(height, device=device)
    cols = torch.arange(width, device=device)
    if pad > 0:
        images = torch.nn.functional.pad(images, (pad, pad, pad, pad))
        dy = (randoms[:, 1] * (2 * pad + 1)).long().clamp_(max=2 * pad)
        dx = (randoms[:, 2] * (2 * pad + 1)).long().clamp_(max=2 * pad)
    else:
        dy = dx = torch.zeros(batch, dtype=torch.long, device=device)
    row_index = dy[:, None] + rows[None, :]
    col_index = dx[:, None] + torch.where(flips[:, None], (width - 1 - cols)[None, :], cols[None, :])
    batch_index = torch.arange(batch, device=device)[:, None, None]
    out = images.permute(0, 2, 3, 1)[batch_index, row_index[:, :, None], col_index[:, None, :]]
    return out.permute(0, 3, 1, 2).contiguous()


#: Random erasing's box (Zhong et al., as torchreid and fast-reid use it): 2-40% of the image, height/width
#: ratio 0.3-3.3 drawn log-uniformly (as torchvision draws it), up to this many tries for a box that fits.
ERASE_AREA: tuple[float, float] = (0.02, 0.4)
ERASE_ASPECT: tuple[float, float] = (0.3, 1 / 0.3)
ERASE_TRIES = 10
#: The fill: the ImageNet mean pixel in uint8, i.e. (almost exactly) zero after normalisation, as fast-reid fills.
ERASE_FILL: tuple[int, ...] = tuple(round(255 * m) for m in IMAGENET_MEAN)


def random_erasing(images: torch.Tensor, prob: float, generator: torch.Generator | None = None,
                   fill: Sequence[float] = ERASE_FILL) -> torch.Tensor:
    """Random erasing (Zhong et al., 2020) of a batch ``(B, C, H, W)``: each image, with probability ``prob``,
    gets one random box (:data:`ERASE_AREA`, :data:`ERASE_ASPECT`) set to ``fill``.

    torchvision's ``RandomErasing`` draws one box per call, so a batch would share it and its draws would come
    from the global generator; here every image has its own box, drawn in one call from ``generator`` (where it
    lives: on the GPU for GPU batches), so a run is reproducible per (seed, epoch) like :func:`flip_and_crop`.
    An image whose tries all give a box larger than the image stays as it is, as in torchvision.
    """
    batch, channels, height, width = images.shape
    device = images.device
    draws = torch.rand((batch, 1 + 4 * ERASE_TRIES), generator=generator,
                       device=generator.device if generator else device).to(device)
    area = height * width * (ERASE_AREA[0] + (ERASE_AREA[1] - ERASE_AREA[0]) * draws[:, 1::4])
    low, high = math.log(ERASE_ASPECT[0]), math.log(ERASE_ASPECT[1])
    aspect = torch.exp(low + (high - low) * draws[:, 2::4])
    box_h = torch.sqrt(area * aspect).round().long()
    box_w = torch.sqrt(area / aspect).round().long()
    fits = (box_h < height) & (box_w < width)
    first = fits.long().argmax(dim=1, keepdim=True)  # the first try that fits (0 when none does: masked below)
    box_h, box_w = box_h.gather(1, first), box_w.gather(1, first)
    top = (draws[:, 3::4].gather(1, first) * (height - box_h + 1)).long().clamp_(max=height - box_h)
    left = (draws[:, 4::4].gather(1, first) * (width - box_w + 1)).long().clamp_(max=width - box_w)
    rows = torch.arange(height, device=device)[None, :, None]
    cols = torch.arange(width, device=device)[None, None, :]
    erased = ((draws[:, :1] < prob) & fits.any(dim=1, keepdim=True))[:, :, None]
    inside = ((rows >= top[:, :, None]) & (rows < (top + box_h)[:, :, None])
              & (cols >= left[:, :, None]) & (cols < (left + box_w)[:, :, None]) & erased)
    value = torch.tensor(list(fill), device=device).to(images.dtype).view(1, channels, 1, 1)
    return torch.where(inside[:, None], value, images)


def identity_batches(labels: torch.Tensor, batch_size: int, instances: int,
                     generator: torch.Generator) -> list[torch.Tensor]:
    """One epoch of P x K batches over positions ``0..len(labels)-1``: P = batch_size / K identities, K images each.

    Each identity's images are shuffled and cut into groups of K (an identity with fewer than K images is
    sampled with replacement to K; the remainder of a larger one waits for the next epoch's shuffle); each
    batch takes one group from P different identities, chosen at random among those with groups left, until
    fewer than P remain (the re-ID "RandomIdentitySampler", written for seeded, batched use).
    """
    identities = batch_size // instances
    order = torch.randperm(len(labels), generator=generator)
    grouped, by_label = torch.sort(labels[order], stable=True)
    positions = order[by_label]
    groups = []
    for images in torch.split(positions, torch.unique_consecutive(grouped, return_counts=True)[1].tolist()):
        if len(images) < instances:
            images = images[torch.randint(len(images), (instances,), generator=generator)]
        groups.append(list(images[:len(images) // instances * instances].split(instances)))
    batches = []
    while True:
        available = [i for i, left in enumerate(groups) if left]
        if len(available) < identities:
            return batches
        chosen = torch.randperm(len(available), generator=generator)[:identities].tolist()
        batches.append(torch.cat([groups[available[i]].pop() for i in chosen]))


def normalize(images: torch.Tensor, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
              dtype: torch.dtype = torch.float32, channels_last: bool = False) -> torch.Tensor:
    """uint8 ``(B, 3, H, W)`` -> normalised floats, on whatever device the batch is."""
    mean_t = torch.tensor(mean, device=images.device, dtype=torch.float32).view(1, 3, 1, 1) * 255.0
    std_t = torch.tensor(std, device=images.device, dtype=torch.float32).view(1, 3, 1, 1) * 255.0
    out = ((images.float() - mean_t) / std_t).to(dtype)
    return out.contiguous(memory_format=torch.channels_last) if channels_last else out


class CachedBatches:
    """Shuffled (or ordered) batches from an :class:`ImageCache`, augmented on the device.

    The decoded images are moved to ``device`` once; every batch is gathered,
    augmented and normalised there.

    The epoch's order comes from ``seed`` and the epoch number alone, so a run
    resumed at epoch ``e`` sees exactly the batches an uninterrupted run saw.
    Under DistributedDataParallel each rank takes every ``world_size``-th
    sample of the epoch's order (with ``instances_per_identity``: every
    ``world_size``-th P x K batch, so each rank's batches are whole).
    """

    def __init__(self, cache: ImageCache, labels: Sequence[int] | torch.Tensor, batch_size: int, *,
                 shuffle: bool = True, drop_last: bool = True, augment: bool = True, pad: int = 10,
                 flip_prob: float = 0.5, seed: int = 0, device: torch.device | str = "cpu", channels_last: bool = False,
                 dtype: torch.dtype = torch.float32, indices: Sequence[int] | None = None,
                 rank: int = 0, world_size: int = 1, erase_prob: float = 0.0, instances_per_identity: int = 0):
        self.cache = cache
        self.labels = torch.as_tensor(np.array(labels, dtype=np.int64))
        if len(self.labels) != len(cache):
            raise FMNInputError(f"{len(cache)} cached images but {len(self.labels)} labels")
        if batch_size < 1:
            raise FMNInputError(f"batch_size must be at least 1, got {batch_size}")
        self.indices = torch.arange(len(cache)) if indices is None else torch.as_tensor(list(indices))
        self.batch_size = batch_size
        self.shuffle, self.drop_last, self.augment, self.pad = shuffle, drop_last, augment, pad
        if not 0.0 <= flip_prob <= 1.0:
            raise FMNInputError(f"flip_prob must lie in [0, 1], got {flip_prob}")
        self.flip_prob = float(flip_prob)
        if not 0.0 <= erase_prob <= 1.0:
            raise FMNInputError(f"erase_prob (random_erasing) must lie in [0, 1], got {erase_prob}")
        self.erase_prob = float(erase_prob)
        self.instances = int(instances_per_identity)
        if self.instances > 0:
            self._check_identity_batches()
        self._plan: tuple[int, list[torch.Tensor]] | None = None
        self.seed, self.device = seed, torch.device(device)
        self.channels_last, self.dtype = channels_last, dtype
        self.epoch = 0
        self.rank, self.world_size = rank, world_size
        # On a GPU the whole decoded split moves to device memory once (3.2 GB for all of
        # Market-1501 at 256x128): batches are then gathered there and never cross the bus.
        self.images = cache.images.to(self.device)
        self.device_labels = self.labels.to(self.device)

    def _check_identity_batches(self) -> None:
        if self.batch_size % self.instances:
            raise FMNInputError(f"batch_size={self.batch_size} is not a multiple of instances_per_identity="
                                f"{self.instances}: a P x K batch holds P identities of K images each")
        identities = len(torch.unique(self.labels[self.indices]))
        if identities < self.batch_size // self.instances:
            raise FMNInputError(f"batch_size={self.batch_size} with instances_per_identity={self.instances} takes "
                                f"{self.batch_size // self.instances} identities per batch, but the images hold only "
                                f"{identities}; lower batch_size or raise instances_per_identity")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _epoch_seed(self) -> int:
        return self.seed * 1_000_003 + self.epoch

    def _identity_plan(self) -> list[torch.Tensor]:
        """This rank's P x K batches of the current epoch (cache indices), drawn once per epoch."""
        if self._plan is None or self._plan[0] != self.epoch:
            generator = torch.Generator().manual_seed(self._epoch_seed())
            batches = [self.indices[b] for b in identity_batches(self.labels[self.indices], self.batch_size,
                                                                 self.instances, generator)]
            self._plan = (self.epoch, batches[self.rank::self.world_size][:len(batches) // self.world_size])
        return self._plan[1]

    def __len__(self) -> int:
        if self.instances:
            return len(self._identity_plan())
        n = len(self.indices) // self.world_size  # every rank gets the same number of batches
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def _batch_indices(self) -> Iterator[torch.Tensor]:
        """The epoch's batches as cache indices on the device: P x K, or slices of a shuffled order."""
        if self.instances:
            yield from (batch.to(self.device) for batch in self._identity_plan())
            return
        order = self.indices
        if self.shuffle:
            order = order[torch.randperm(len(order), generator=torch.Generator().manual_seed(self._epoch_seed()))]
        order = order[self.rank::self.world_size][:len(self) * self.batch_size if self.drop_last else None]
        order = order.to(self.device)
        for step in range(len(self)):
            yield order[step * self.batch_size:(step + 1) * self.batch_size]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        generator = torch.Generator(device=self.device).manual_seed(self._epoch_seed() + 1)
        for batch_index in self._batch_indices():
            images = self.images[batch_index]
            labels = self.device_labels[batch_index]
            if self.augment:
                images = flip_and_crop(images, self.pad, self.flip_prob, generator=generator)
                if self.erase_prob > 0:
                    images = random_erasing(images, self.erase_prob, generator=generator)
            yield normalize(images, dtype=self.dtype, channels_last=self.channels_last), labels
