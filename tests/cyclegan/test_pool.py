"""The image pool: fills, then swaps half the time, never holds a graph, saves its state."""

from __future__ import annotations

import torch

from src.cyclegan.pool import ImagePool


def batch(value: float, size: int = 1) -> torch.Tensor:
    return torch.full((size, 1, 2, 2), value)


def test_filling_pool_returns_and_stores_each_new_image() -> None:
    pool = ImagePool(3)
    out = pool.query(torch.cat([batch(1), batch(2)]))
    assert torch.equal(out, torch.cat([batch(1), batch(2)]))
    assert len(pool) == 2
    pool.query(batch(3))
    assert len(pool) == 3


def test_full_pool_swaps_about_half_the_time() -> None:
    torch.manual_seed(0)
    pool = ImagePool(4)
    pool.query(torch.cat([batch(v) for v in (1, 2, 3, 4)]))
    swapped = 0
    for step in range(400):
        new = 100.0 + step
        out = pool.query(batch(new))
        stored = {float(image[0, 0, 0, 0]) for image in pool.images}
        if float(out[0, 0, 0, 0]) == new:
            assert new not in stored  # returned as it is, not stored
        else:
            swapped += 1
            assert new in stored  # took the returned image's place
            assert float(out[0, 0, 0, 0]) not in stored
        assert len(pool) == 4
    assert 160 < swapped < 240


def test_zero_size_pool_is_a_pass_through_and_pool_never_holds_a_graph() -> None:
    fake = torch.randn(2, 1, 2, 2, requires_grad=True) * 2
    assert torch.equal(ImagePool(0).query(fake), fake.detach())
    pool = ImagePool(5)
    out = pool.query(fake)
    assert not out.requires_grad
    assert all(not image.requires_grad for image in pool.images)


def test_state_round_trip_restores_the_same_pool() -> None:
    pool = ImagePool(3)
    pool.query(torch.randn(3, 1, 2, 2))
    restored = ImagePool(1)
    restored.load_state_dict(pool.state_dict())
    assert restored.size == 3
    assert all(torch.equal(a, b) for a, b in zip(pool.images, restored.images, strict=True))
    empty = ImagePool(2)
    empty.load_state_dict(ImagePool(2).state_dict())
    assert len(empty) == 0
