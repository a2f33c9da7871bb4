"""Decode-once cache, batch augmentation and batch order."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fmn_core.data.loading import (
    CachedBatches,
    ImageCache,
    ReIDImageDataset,
    decode_image,
    flip_and_crop,
    normalize,
)
from tests.helpers import write_image


def make_images(tmp_path, n=6):
    return [str(write_image(tmp_path / f"{i}.jpg", seed=i, size=(128, 64))) for i in range(n)]


def test_cache_matches_per_item_decoding(tmp_path):
    paths = make_images(tmp_path)
    cache = ImageCache.build(paths, (256, 128), workers=2)
    assert cache.images.shape == (6, 3, 256, 128) and cache.images.dtype == torch.uint8
    dataset = ReIDImageDataset(paths, list(range(6)), (256, 128))
    for i in range(6):
        image, label = dataset[i]
        assert torch.equal(image, cache.images[i]) and int(label) == i
    assert decode_image(paths[0], (224, 224)).shape == (3, 224, 224)


def test_disk_cache_is_reused_and_invalidated(tmp_path):
    paths = make_images(tmp_path)
    first = ImageCache.load_or_build(paths, (64, 32), tmp_path / "cache")
    files = list((tmp_path / "cache").glob("images-*.npy"))
    assert len(files) == 1
    again = ImageCache.load_or_build(paths, (64, 32), tmp_path / "cache")
    assert torch.equal(first.images, again.images)
    write_image(tmp_path / "0.jpg", seed=99, size=(120, 60))  # content and size change -> new key
    ImageCache.load_or_build(paths, (64, 32), tmp_path / "cache")
    assert len(list((tmp_path / "cache").glob("images-*.npy"))) == 2


def test_flip_without_crop_is_a_mirror():
    images = torch.randint(0, 255, (4, 3, 8, 5), dtype=torch.uint8)
    assert torch.equal(flip_and_crop(images, pad=0, flip_prob=1.0), images.flip(-1))
    assert torch.equal(flip_and_crop(images, pad=0, flip_prob=0.0), images)


def test_crop_is_a_window_of_the_padded_image():
    images = torch.randint(1, 255, (16, 3, 12, 6), dtype=torch.uint8)
    out = flip_and_crop(images, pad=3, flip_prob=0.5, generator=torch.Generator().manual_seed(1))
    padded = torch.nn.functional.pad(images, (3, 3, 3, 3))
    offsets = set()
    for b in range(16):
        windows = {(dy, dx): padded[b, :, dy:dy + 12, dx:dx + 6] for dy in range(7) for dx in range(7)}
        hits = [(dy, dx, flip) for (dy, dx), window in windows.items() for flip in (False, True)
                if torch.equal(out[b], window.flip(-1) if flip else window)]
        assert hits, f"sample {b} is not a (flipped) window of the padded image"
        offsets.add(hits[0])
    assert len(offsets) > 4  # offsets and flips vary across the batch


def test_normalize_matches_manual():
    images = torch.randint(0, 256, (2, 3, 4, 4), dtype=torch.uint8)
    out = normalize(images)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    assert torch.allclose(out, (images.float() / 255 - mean) / std, atol=1e-5)
    assert normalize(images, channels_last=True).is_contiguous(memory_format=torch.channels_last)


def test_batches_deterministic_per_epoch(tmp_path):
    cache = ImageCache(torch.randint(0, 255, (10, 3, 8, 4), dtype=torch.uint8), [str(i) for i in range(10)])
    labels = np.arange(10)
    loader = CachedBatches(cache, labels, batch_size=3, seed=5)
    assert len(loader) == 10 // 3  # the last partial batch is dropped (BatchNorm needs full batches)
    first = [lab.tolist() for _, lab in loader]
    again = [lab.tolist() for _, lab in loader]
    assert first == again
    loader.set_epoch(1)
    assert [lab.tolist() for _, lab in loader] != first
    ordered = CachedBatches(cache, labels, batch_size=4, shuffle=False, drop_last=False, augment=False)
    batches = list(ordered)
    assert [lab.tolist() for _, lab in batches] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert torch.allclose(batches[0][0], normalize(cache.images[:4]))


def test_flip_prob_is_honoured(tmp_path):
    from fmn_core.data.loading import CachedBatches, ImageCache

    images = torch.arange(4 * 3 * 4 * 6, dtype=torch.uint8).view(4, 3, 4, 6)
    cache = ImageCache(images, [f"{i}.png" for i in range(4)])

    def flipped_share(flip_prob: float) -> float:
        batches = CachedBatches(cache, [0, 1, 2, 3], 4, shuffle=False, pad=0, flip_prob=flip_prob, seed=3)
        flips = 0
        for epoch in range(25):
            batches.set_epoch(epoch)
            for batch, _ in batches:
                plain = CachedBatches(cache, [0, 1, 2, 3], 4, shuffle=False, augment=False)
                reference = next(iter(plain))[0]
                flips += sum(not torch.equal(batch[i], reference[i]) for i in range(4))
        return flips / 100

    assert flipped_share(0.0) == 0.0
    assert flipped_share(1.0) == 1.0
    assert 0.3 < flipped_share(0.5) < 0.7
    with pytest.raises(ValueError, match="flip_prob"):
        CachedBatches(cache, [0, 1, 2, 3], 4, flip_prob=1.5)
