"""Layer blending: the endpoints reproduce their generators, weights land on the right layers,
schedules resolve by name and resolution, and bad inputs are clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from src.blend.blending import (
    blend_generators,
    resolve_weights,
    synthesis_layers,
    weights_by_resolution,
)
from src.common.errors import UserError
from src.stylegan3.legacy import load_networks
from src.stylegan3.networks import Generator
from tests.stylegan3.tiny import G_KWARGS, write_tiny_checkpoint

FIXED = ("up_filter", "down_filter", "freqs", "phases", "transform")


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, torch.nn.Module]:
    folder = tmp_path_factory.mktemp("nets")
    base = load_networks(write_tiny_checkpoint(folder / "base.pt", seed=0))["G_ema"].eval()
    tuned = load_networks(write_tiny_checkpoint(folder / "tuned.pt", seed=0, tune_seed=1))
    return base, tuned["G_ema"].eval()


def images(generator: torch.nn.Module) -> torch.Tensor:
    z = torch.randn(3, generator.z_dim, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        return generator(z, None, truncation_psi=0.7)


def test_layers_follow_the_synthesis_order(pair) -> None:
    base, _ = pair
    layers = synthesis_layers(base)
    assert [layer.short for layer in layers] == ["input", "L0", "L1", "L2", "L3"]
    assert [layer.name for layer in layers[1:]] == base.synthesis.layer_names
    assert layers[-1].resolution == 16


def test_weight_zero_is_the_base_exactly(pair) -> None:
    base, tuned = pair
    blended = blend_generators(base, tuned, [0.0] * 5)
    for key, value in base.state_dict().items():
        assert torch.equal(blended.state_dict()[key], value), key
    assert torch.equal(images(blended), images(base))
    assert not torch.equal(images(tuned), images(base))


def test_weight_one_with_tuned_mapping_is_the_tuned_exactly(pair) -> None:
    base, tuned = pair
    blended = blend_generators(base, tuned, [1.0] * 5, mapping_from="tuned")
    for key, value in tuned.state_dict().items():
        assert torch.equal(blended.state_dict()[key], value), key
    assert torch.equal(images(blended), images(tuned))


def test_half_is_the_midpoint_of_every_synthesis_tensor(pair) -> None:
    base, tuned = pair
    blended = blend_generators(base, tuned, [0.5] * 5).state_dict()
    tuned_state = tuned.state_dict()
    for key, value in base.state_dict().items():
        if key.startswith("mapping.") or key.endswith(FIXED):
            assert torch.equal(blended[key], value), key
        else:
            assert torch.equal(blended[key], (value + tuned_state[key]) / 2), key
    ema = next(k for k in blended if k.endswith("magnitude_ema"))
    assert blended[ema] != base.state_dict()[ema]


def test_each_layer_gets_its_own_weight_and_affine_policy(pair) -> None:
    base, tuned = pair
    weights = resolve_weights([0.25, 0.5, 0.75, 1.0], synthesis_layers(base), "base")
    assert weights == [0.0, 0.25, 0.5, 0.75, 1.0]
    blended = blend_generators(base, tuned, weights, affine="base").state_dict()
    base_state, tuned_state = base.state_dict(), tuned.state_dict()
    for index, name in enumerate(base.synthesis.layer_names):
        key = f"synthesis.{name}.weight"
        expected = tuned_state[key] * weights[index + 1] + base_state[key] * (
            1 - weights[index + 1]
        )
        assert torch.equal(blended[key], expected), key
        affine = f"synthesis.{name}.affine.weight"
        assert torch.equal(blended[affine], base_state[affine])
    assert torch.equal(blended["synthesis.input.weight"], base_state["synthesis.input.weight"])


def test_mapping_comes_whole_from_the_chosen_network(pair) -> None:
    base, tuned = pair
    blended = blend_generators(base, tuned, [0.5] * 5, mapping_from="tuned").state_dict()
    assert torch.equal(blended["mapping.w_avg"], tuned.state_dict()["mapping.w_avg"])
    assert torch.equal(blended["mapping.fc0.weight"], tuned.state_dict()["mapping.fc0.weight"])


def test_list_of_one_per_layer_and_input_policies(pair) -> None:
    layers = synthesis_layers(pair[0])
    assert resolve_weights([0.1, 0.2, 0.3, 0.4, 0.5], layers) == [0.1, 0.2, 0.3, 0.4, 0.5]
    assert resolve_weights([0.2, 0.3, 0.4, 0.5], layers, "first")[0] == 0.2
    assert resolve_weights([0.2, 0.3, 0.4, 0.5], layers, "tuned")[0] == 1.0
    assert resolve_weights(0.3, layers) == [0.3] * 5


def test_mapping_by_name_with_a_default(pair) -> None:
    base, _ = pair
    layers = synthesis_layers(base)
    full = base.synthesis.layer_names[2]
    weights = resolve_weights({"input": 0.1, "L0": 0.2, full: 0.9, "default": 0.6}, layers)
    assert weights == [0.1, 0.2, 0.6, 0.9, 0.6]


def test_switch_by_resolution_hard_and_smooth() -> None:
    layers = synthesis_layers(Generator(**{**G_KWARGS, "img_resolution": 64, "num_layers": 6}))
    resolutions = [layer.resolution for layer in layers]
    assert resolutions == [16, 16, 16, 32, 64, 64, 64, 64]
    hard = weights_by_resolution(layers, switch_at=32)
    assert hard == [0, 0, 0, 1, 1, 1, 1, 1]
    swap = resolve_weights({"by": "resolution", "switch_at": 32, "low": 1, "high": 0}, layers)
    assert swap == [1.0 - w for w in hard]
    smooth = weights_by_resolution(layers, switch_at=32, width=0.5)
    assert all(0 < w < 1 for w in smooth)
    assert smooth == sorted(smooth)
    assert smooth[3] == pytest.approx(0.5)
    assert smooth[0] == pytest.approx(1 / (1 + 2.718281828459045**2))


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ([0.5] * 15, "has 15 entries; this generator needs 4 \\(L0..L3\\) or 5"),
        ({"L9": 1.0, "default": 0.5}, "unknown layer 'L9'; this generator's layers are input, L0"),
        ({"L0": 1.0}, "names no weight for input, L1, L2, L3; add them or a default"),
        ([0.5, 0.5, 2.0, 0.5], r"blend.weights\[2\]: 2.0 is outside \[0, 1\]"),
        ({"by": "size", "switch_at": 8}, "the only option is resolution"),
    ],
)
def test_bad_weights_are_clear_errors(pair, spec, message: str) -> None:
    with pytest.raises(UserError, match=message):
        resolve_weights(spec, synthesis_layers(pair[0]))


def test_architecture_mismatch_names_the_first_difference(tmp_path: Path, pair) -> None:
    base, _ = pair
    wider = load_networks(write_tiny_checkpoint(tmp_path / "w.pt", channel_max=24))["G_ema"]
    message = r"differ: synthesis\.input\.weight is \(32, 32\) in the base, \(24, 24\) in the tuned"
    with pytest.raises(UserError, match=message):
        blend_generators(base, wider, [0.5] * 5)


def test_unrelated_generators_differ_in_fixed_buffers(tmp_path: Path, pair) -> None:
    base, _ = pair
    other = load_networks(write_tiny_checkpoint(tmp_path / "o.pt", seed=7))["G_ema"]
    with pytest.raises(UserError, match=r"fixed buffer synthesis\.input\.freqs;"):
        blend_generators(base, other, [0.5] * 5)
