"""Decode-once cache, batch augmentation (random erasing included) and batch order (P x K identity batches too)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from fmn_core.data.loading import (
    ERASE_AREA,
    ERASE_FILL,
    CachedBatches,
    ImageCache,
    ReIDImageDataset,
    decode_image,
    flip_and_crop,
    identity_batches,
    normalize,
    random_erasing,
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


def _erased(images: torch.Tensor, prob: float, seed: int) -> torch.Tensor:
    return random_erasing(images, prob, torch.Generator().manual_seed(seed))


def test_random_erasing_erases_one_box_in_the_given_share_of_images_reproducibly():
    images = torch.full((2000, 3, 32, 16), 255, dtype=torch.uint8)  # white: every erased pixel shows
    out = _erased(images, 0.5, seed=1)
    changed = (out != images).any(dim=1)  # (B, H, W): the erased pixels
    share = changed.flatten(1).any(dim=1).float().mean().item()
    assert 0.45 < share < 0.55, share
    for image, pixels in zip(out[:200], changed[:200], strict=True):
        if pixels.any():  # one rectangle of the mean pixel, 2-40% of the image (rounding of the sides aside)
            rows, cols = pixels.any(dim=1).nonzero().squeeze(1), pixels.any(dim=0).nonzero().squeeze(1)
            assert pixels.sum() == len(rows) * len(cols) and rows.diff().eq(1).all() and cols.diff().eq(1).all()
            assert ERASE_AREA[0] * 0.5 <= pixels.float().mean() <= ERASE_AREA[1] * 1.25
            assert image[:, pixels].T.eq(torch.tensor(ERASE_FILL, dtype=torch.uint8)).all()
    assert torch.equal(out, _erased(images, 0.5, seed=1)) and not torch.equal(out, _erased(images, 0.5, seed=2))
    assert torch.equal(_erased(images, 0.0, seed=1), images)
    assert (_erased(images, 1.0, seed=1) != images).flatten(1).any(dim=1).float().mean() > 0.99
    # the ImageNet mean pixel is (almost exactly) zero after normalisation
    assert normalize(torch.tensor(ERASE_FILL, dtype=torch.uint8).view(1, 3, 1, 1)).abs().max() < 0.01


def test_random_erasing_in_batches_is_seeded_by_seed_and_epoch():
    cache = ImageCache(torch.full((64, 3, 16, 8), 200, dtype=torch.uint8), [str(i) for i in range(64)])

    def epoch(erase_prob: float, seed: int, number: int) -> torch.Tensor:
        loader = CachedBatches(cache, np.arange(64), 32, shuffle=False, pad=0, flip_prob=0.0, seed=seed,
                               erase_prob=erase_prob)
        loader.set_epoch(number)
        return torch.cat([images for images, _ in loader])

    plain = epoch(0.0, 0, 0)
    assert torch.equal(plain, normalize(cache.images))
    erased = epoch(0.5, 0, 0)
    share = (erased != plain).flatten(1).any(dim=1).float().mean().item()
    assert 0.25 < share < 0.75 and torch.equal(erased, epoch(0.5, 0, 0))
    assert not torch.equal(erased, epoch(0.5, 0, 1)) and not torch.equal(erased, epoch(0.5, 1, 0))
    with pytest.raises(ValueError, match=r"erase_prob \(random_erasing\) must lie in \[0, 1\], got 1.5"):
        CachedBatches(cache, np.arange(64), 32, erase_prob=1.5)


def test_identity_batches_hold_p_identities_of_k_images_each():
    labels = torch.tensor([0] * 9 + [1] * 4 + [2] * 2 + [3] * 5 + [4] * 1 + [5] * 6)  # 2 and 4: fewer than K = 4
    batches = identity_batches(labels, batch_size=8, instances=4, generator=torch.Generator().manual_seed(0))
    assert len(batches) >= 3
    for batch in batches:
        counts = Counter(labels[batch].tolist())
        assert len(counts) == 2 and set(counts.values()) == {4}, counts
    used = Counter(labels[torch.cat(batches)].tolist())
    assert used[4] in (0, 4)  # a one-image identity is repeated to K (sampled with replacement), if drawn
    again = identity_batches(labels, 8, 4, torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip(batches, again, strict=True))


def test_identity_batches_in_the_loader_are_seeded_sharded_and_checked():
    labels = np.repeat(np.arange(12), 5)  # 12 identities x 5 images
    cache = ImageCache(torch.randint(0, 255, (60, 3, 8, 4), dtype=torch.uint8), [str(i) for i in range(60)])

    def epoch_labels(seed: int = 0, number: int = 0, rank: int = 0, world_size: int = 1) -> list[list[int]]:
        loader = CachedBatches(cache, labels, 12, seed=seed, instances_per_identity=3, rank=rank,
                               world_size=world_size)
        loader.set_epoch(number)
        out = [batch.tolist() for _, batch in loader]
        assert len(out) == len(loader)
        return out

    first = epoch_labels()
    assert len(first) == 12 // 4  # one group of 3 per identity (5 images), 4 identities per batch
    assert all(sorted(Counter(batch).values()) == [3, 3, 3, 3] for batch in first)
    assert first == epoch_labels() and first != epoch_labels(number=1) and first != epoch_labels(seed=1)
    ranks = [epoch_labels(rank=r, world_size=2) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 1 and ranks[0] != ranks[1]  # 3 batches: one each, the third dropped
    assert ranks == [[first[0]], [first[1]]]  # rank r takes batches r, r + 2, ... of the same plan
    with pytest.raises(ValueError, match="batch_size=10 is not a multiple of instances_per_identity=3"):
        CachedBatches(cache, labels, 10, instances_per_identity=3)
    with pytest.raises(ValueError, match="takes 15 identities per batch, but the images hold only 12"):
        CachedBatches(cache, labels, 30, instances_per_identity=2)
