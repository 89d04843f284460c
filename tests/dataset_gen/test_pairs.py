"""Paired generation: A is the base face and B its blend from the same w, pairs are
byte-identical whatever the batching, files verify, and reruns keep only verified pairs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from src.common.data import read_manifest
from src.common.errors import UserError
from src.common.fileio import sha256_file
from src.dataset_gen.pairs import PairRenderer, unique_seeds
from src.stylegan3.generate import latents_for, to_pil
from src.stylegan3.legacy import load_networks
from tests.dataset_gen.conftest import run_in_process
from tests.stylegan3.tiny import write_tiny_checkpoint

SEEDS = "dataset_gen.seeds=0-6"


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*.png"))}


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as picture:
        return np.asarray(picture.convert("RGB"))


def test_pairs_are_byte_identical_across_runs_and_batch_sizes(tmp_path: Path, nets) -> None:
    one = run_in_process(tmp_path / "one", nets, SEEDS, "dataset_gen.batch_size=1")
    four = run_in_process(tmp_path / "four", nets, SEEDS, "dataset_gen.batch_size=4")
    again = run_in_process(tmp_path / "again", nets, SEEDS, "dataset_gen.batch_size=4")
    pairs = {k: v for k, v in files(one).items() if k != "preview.png"}
    assert len(pairs) == 14
    assert files(four) == files(one) == files(again)
    assert (four / "manifest.jsonl").read_bytes() == (one / "manifest.jsonl").read_bytes()


def test_a_is_the_base_face_and_b_the_blend_from_the_same_w(tmp_path: Path, nets) -> None:
    out = run_in_process(tmp_path, nets, "dataset_gen.seeds=[3,1]", "dataset_gen.psi=0.5")
    base, blended = (load_networks(path)["G_ema"].eval() for path in nets)
    z = latents_for([3], base.z_dim).float()
    with torch.no_grad():
        ws = base.mapping(z, None, truncation_psi=0.5)
        expected_a, expected_b = (to_pil(net.synthesis(ws))[0] for net in (base, blended))
    assert np.array_equal(pixels(out / "A" / "000003.png"), np.asarray(expected_a))
    assert np.array_equal(pixels(out / "B" / "000003.png"), np.asarray(expected_b))
    assert not np.array_equal(np.asarray(expected_a), np.asarray(expected_b))


def test_own_mapping_gives_b_from_the_blended_mapping(nets) -> None:
    base, blended = (load_networks(path)["G_ema"].eval() for path in nets)
    renderer = PairRenderer(base, blended, psi=0.5, w_source="own")
    z = latents_for([2], base.z_dim).float()
    with torch.no_grad():
        expected = to_pil(blended(z, None, truncation_psi=0.5))[0]
    shared = PairRenderer(base, blended, psi=0.5)([2])[0][1]
    assert np.array_equal(np.asarray(renderer([2])[0][1]), np.asarray(expected))
    assert not np.array_equal(np.asarray(shared), np.asarray(expected))


def test_batched_forward_differs_by_at_most_one_level(nets) -> None:
    base, blended = (load_networks(path)["G_ema"].eval() for path in nets)
    seeds = list(range(6))
    exact = PairRenderer(base, blended, psi=0.7)(seeds)
    batched = PairRenderer(base, blended, psi=0.7, batch_invariant=False)(seeds)
    for pair, other in zip(exact, batched, strict=True):
        for a, b in zip(pair, other, strict=True):
            diff = np.abs(np.asarray(a, dtype=int) - np.asarray(b, dtype=int))
            assert diff.max() <= 1


def test_manifest_is_what_the_cleaner_and_pix2pix_read(tmp_path: Path, nets) -> None:
    out = run_in_process(tmp_path, nets, SEEDS, "dataset_gen.size=24")
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert [row["seed"] for row in rows] == list(range(7))
    for row in rows:
        assert (row["a"], row["b"]) == (f"A/{row['seed']:06d}.png", f"B/{row['seed']:06d}.png")
        assert row["sha256_a"] == sha256_file(out / row["a"])
        assert row["sha256_b"] == sha256_file(out / row["b"])
        assert (row["psi"], row["w_source"], row["size"]) == (0.7, "base", 24)
        assert row["base_sha256"] == sha256_file(nets[0])
        assert row["blended_sha256"] == sha256_file(nets[1])
    manifest = read_manifest(out / "manifest.jsonl")
    assert manifest.pairs[0] == (out / "A" / "000000.png", out / "B" / "000000.png")
    assert Image.open(manifest.pairs[6][1]).size == (24, 24)
    assert (out / "preview.png").is_file()
    assert not (out / "journal").exists()


def test_rerun_keeps_verified_pairs_and_remakes_the_rest(tmp_path: Path, nets) -> None:
    out = run_in_process(tmp_path, nets, SEEDS)
    original = files(out)
    kept = out / "A" / "000001.png"
    kept_stamp = kept.stat().st_mtime_ns
    (out / "B" / "000002.png").write_bytes(b"not the pair")
    (out / "A" / "000004.png").unlink()
    (out / "A" / ".000005.png.x1y2.tmp").write_bytes(b"half a png")
    run_in_process(tmp_path, nets, SEEDS)
    assert files(out) == original
    assert kept.stat().st_mtime_ns == kept_stamp
    assert not list(out.glob("[AB]/.*"))

    run_in_process(tmp_path, nets, "dataset_gen.seeds=0-3")
    assert sorted(p.name for p in (out / "B").iterdir()) == [f"{s:06d}.png" for s in range(4)]
    assert len((out / "manifest.jsonl").read_text().splitlines()) == 4


def test_a_changed_recipe_remakes_every_pair(tmp_path: Path, nets) -> None:
    out = run_in_process(tmp_path, nets, "dataset_gen.seeds=0-2")
    before = files(out)
    run_in_process(tmp_path, nets, "dataset_gen.seeds=0-2", "dataset_gen.psi=0.5")
    after = files(out)
    assert all(after[name] != before[name] for name in before if name != "preview.png")


def test_bad_inputs_are_clear_errors(tmp_path: Path, nets) -> None:
    base, blended = (load_networks(path)["G_ema"] for path in nets)
    bigger = load_networks(write_tiny_checkpoint(tmp_path / "big.pt", img_resolution=32))
    with pytest.raises(UserError, match=r"base makes 16 px .* the blended 32 px"):
        PairRenderer(base, bigger["G_ema"])
    with pytest.raises(UserError, match=r"w_source: 'mine'; use base or own"):
        PairRenderer(base, blended, w_source="mine")
    with pytest.raises(UserError, match="seed -1 is outside"):
        unique_seeds([3, -1])
    assert unique_seeds([5, 2, 5]) == [5, 2]
