"""The batched pipeline against torchvision's per-image PIL transforms, same offsets and flips."""

import numpy as np
import pytest
import torch
import torchvision.transforms as T
from PIL import Image

from harness.data.tensors import DATASETS, BatchPipeline, draw_epoch, resize_u8


def reference_train_transform(spec, top, left, flip):
    """The reference's train transform with RandomCrop's offsets and the flip pinned."""

    class PinnedCrop(T.RandomCrop):
        @staticmethod
        def get_params(img, output_size):
            return top, left, 32, 32

    steps = [T.Resize(32), PinnedCrop(32, padding=4), T.RandomHorizontalFlip(p=1.0 if flip else 0.0),
             T.ToTensor()]
    if spec.channels == 1:
        steps.append(T.Lambda(lambda x: x.repeat(3, 1, 1)))
    steps.append(T.Normalize(spec.mean, spec.std))
    return T.Compose(steps)


def reference_test_transform(spec):
    steps = [T.Resize(32), T.ToTensor()]
    if spec.channels == 1:
        steps.append(T.Lambda(lambda x: x.repeat(3, 1, 1)))
    return T.Compose(steps + [T.Normalize(spec.mean, spec.std)])


def _cases(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    top = torch.randint(0, 9, (n,), generator=g)
    left = torch.randint(0, 9, (n,), generator=g)
    flip = torch.rand(n, generator=g) < 0.5
    top[:4] = torch.tensor([0, 8, 0, 8])  # the corners, where padding shows
    left[:4] = torch.tensor([0, 8, 8, 0])
    return top, left, flip


def test_cifar_batched_equals_torchvision():
    spec = DATASETS["cifar10"]
    rng = np.random.default_rng(0)
    hwc = rng.integers(0, 256, (64, 32, 32, 3), dtype=np.uint8)
    top, left, flip = _cases(64)
    ref = torch.stack([reference_train_transform(spec, int(t), int(x), bool(f))(Image.fromarray(im))
                       for im, t, x, f in zip(hwc, top, left, flip)])
    pipe = BatchPipeline(spec.mean, spec.std, spec.channels, "cpu")
    images = torch.from_numpy(hwc).permute(0, 3, 1, 2).contiguous()
    ours = pipe.train_batch(pipe.pad(images), top, left, flip)
    assert ours.shape == ref.shape == (64, 3, 32, 32) and ours.dtype == torch.float32
    assert (ours - ref).abs().max().item() <= 1e-6

    ref_test = torch.stack([reference_test_transform(spec)(Image.fromarray(im)) for im in hwc])
    assert (pipe.test_batch(images) - ref_test).abs().max().item() <= 1e-6


def test_fmnist_batched_equals_torchvision_including_resize():
    """28 -> 32 resize: PIL's antialiased bilinear in fixed point vs torch's uint8 kernel.

    torch's CPU uint8 antialiased bilinear kernel reproduces PIL's fixed-point arithmetic, so the
    resized images are identical and the same 1e-6 tolerance as CIFAR holds. Had they rounded
    differently, the gap would be one grey level, 1/255/0.353 = 0.011 after normalisation.
    """
    spec = DATASETS["fmnist"]
    rng = np.random.default_rng(1)
    grey = rng.integers(0, 256, (48, 28, 28), dtype=np.uint8)
    grey[:8] = np.linspace(0, 255, 28 * 28).reshape(28, 28).astype(np.uint8)  # smooth ramps too
    top, left, flip = _cases(48, seed=1)
    ref = torch.stack([reference_train_transform(spec, int(t), int(x), bool(f))(Image.fromarray(im))
                       for im, t, x, f in zip(grey, top, left, flip)])
    pipe = BatchPipeline(spec.mean, spec.std, spec.channels, "cpu")
    resized = resize_u8(torch.from_numpy(grey).unsqueeze(1))
    ours = pipe.train_batch(pipe.pad(resized), top, left, flip)
    assert ours.shape == ref.shape == (48, 3, 32, 32)
    assert (ours - ref).abs().max().item() <= 1e-6


def test_padding_is_applied_before_normalisation():
    spec = DATASETS["cifar100"]
    pipe = BatchPipeline(spec.mean, spec.std, 3, "cpu")
    white = torch.full((1, 3, 32, 32), 255, dtype=torch.uint8)
    out = pipe.train_batch(pipe.pad(white), torch.tensor([0]), torch.tensor([0]), torch.tensor([False]))
    for c in range(3):
        pad_value = (0 - spec.mean[c]) / spec.std[c]
        assert out[0, c, 0, 0].item() == pytest.approx(pad_value, abs=1e-6)
        assert out[0, c, 10, 10].item() == pytest.approx((1 - spec.mean[c]) / spec.std[c], abs=1e-6)


def test_epoch_plan_covers_every_image_once():
    g = torch.Generator().manual_seed(0)
    plan = draw_epoch(1000, g, torch.device("cpu"))
    assert sorted(plan.order.tolist()) == list(range(1000))
    assert plan.top.min() == 0 and plan.top.max() == 8 and plan.left.min() == 0 and plan.left.max() == 8
    assert 400 < int(plan.flip.sum()) < 600
    again = draw_epoch(1000, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert torch.equal(plan.order, again.order) and torch.equal(plan.flip, again.flip)
