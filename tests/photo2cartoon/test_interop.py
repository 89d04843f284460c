"""Released-weights interop: reference key names, exact outputs after loading, clear errors.

Every fixture is the ``state_dict()`` of an independent reference-layout module
(:mod:`tests.photo2cartoon.reference_layout`), saved the way U-GAT-IT's and photo2cartoon's
trainers save it (:mod:`tests.reference_files`), never the output of our own converter.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from src.common.checkpoint import CheckpointMismatchError
from src.photo2cartoon.interop import (
    discriminator_from_reference,
    from_reference_state_dict,
    generator_from_reference,
    infer_generator_config,
    load_reference_checkpoint,
    to_reference_state_dict,
)
from src.photo2cartoon.networks import Discriminator, Generator
from tests.photo2cartoon import reference_layout as ref
from tests.reference_files import (
    randomise,
    reference_state_dict,
    save_like_reference,
)

# Key names of the released files (U-GAT-IT's ResnetGenerator / Discriminator and
# photo2cartoon's hourglass generator), as they appear in their state dicts.
UGATIT_KEYS = {
    "DownBlock.1.weight",
    "DownBlock.5.weight",
    "DownBlock.9.weight",
    "DownBlock.12.conv_block.1.weight",
    "DownBlock.15.conv_block.5.weight",
    "gap_fc.weight",
    "gmp_fc.weight",
    "conv1x1.weight",
    "conv1x1.bias",
    "FC.0.weight",
    "FC.2.weight",
    "gamma.weight",
    "beta.weight",
    "UpBlock1_1.conv1.weight",
    "UpBlock1_4.norm2.rho",
    "UpBlock2.2.weight",
    "UpBlock2.3.rho",
    "UpBlock2.8.gamma",
    "UpBlock2.11.weight",
}
PHOTO2CARTOON_KEYS = {
    "ConvBlock1.1.weight",
    "HourGlass1.HG.0.ConvBlock1_1.ConvBlock1.3.weight",
    "HourGlass1.HG.0.ConvBlock4_2.ConvBlock4.2.weight",
    "HourGlass2.HG.0.ConvBlock5.ConvBlock3.3.weight",
    "HourGlass3.HG.0.ConvBlock9.ConvBlock2.3.weight",
    "HourGlass3.HG.1.ConvBlock1.3.weight",
    "HourGlass3.HG.2.weight",
    "HourGlass3.Conv1.bias",
    "HourGlass3.Conv3.weight",
    "HourGlass4.Conv1.weight",
    "DownBlock1.1.weight",
    "DownBlock2.1.weight",
    "EncodeBlock4.conv_block.5.weight",
    "gap_fc.bias",
    "FC.2.bias",
    "DecodeBlock1.norm1.norm.rho",
    "DecodeBlock2.norm2.w_gamma",
    "DecodeBlock3.norm1.c_gamma.2.weight",
    "DecodeBlock4.norm2.s_beta.bias",
    "UpBlock1.2.weight",
    "UpBlock2.3.rho",
    "ConvBlock2.1.weight",
}
DISCRIMINATOR_KEYS = {
    "model.1.weight_orig",
    "model.1.weight_u",
    "model.1.bias",
    "model.16.weight_v",
    "gap_fc.weight_orig",
    "gmp_fc.weight_u",
    "conv1x1.weight",
    "conv.weight_orig",
}


LAYOUT_PAIRS = {
    "ugatit light": (
        lambda: Generator("ugatit", ngf=4, img_size=32, n_res=4),
        lambda: ref.UgatitGenerator(4, 4, 32, light=True),
    ),
    "ugatit full": (
        lambda: Generator("ugatit", ngf=4, img_size=32, light=False, n_res=2),
        lambda: ref.UgatitGenerator(4, 2, 32, light=False),
    ),
    "photo2cartoon light": (
        lambda: Generator("photo2cartoon", ngf=8, img_size=32),
        lambda: ref.Photo2CartoonGenerator(8, 32, light=True),
    ),
    "photo2cartoon full": (
        lambda: Generator("photo2cartoon", ngf=8, img_size=32, light=False),
        lambda: ref.Photo2CartoonGenerator(8, 32, light=False),
    ),
    "global critic": (
        lambda: Discriminator(3, ndf=4, n_layers=7),
        lambda: ref.Discriminator(3, 4, 7),
    ),
    "local critic": (
        lambda: Discriminator(3, ndf=4, n_layers=5),
        lambda: ref.Discriminator(3, 4, 5),
    ),
}


@pytest.mark.parametrize("layout", LAYOUT_PAIRS)
def test_our_names_and_shapes_are_the_reference_modules(layout: str) -> None:
    build_ours, build_reference = LAYOUT_PAIRS[layout]
    ours, reference = to_reference_state_dict(build_ours()), build_reference().state_dict()
    assert sorted(ours) == sorted(reference)
    assert all(ours[k].shape == v.shape for k, v in reference.items())


def test_reference_modules_hold_the_released_key_names() -> None:
    ugatit = ref.UgatitGenerator(4, 4, 32, light=True).state_dict()
    assert set(ugatit) >= UGATIT_KEYS
    # 3 convs + 4 blocks x 2 + 4 CAM + 2 MLP + gamma, beta + 4 blocks x 4 + 2 x 4 up + head
    assert len(ugatit) == 44
    photo2cartoon = ref.Photo2CartoonGenerator(8, 32, light=True).state_dict()
    assert set(photo2cartoon) >= PHOTO2CARTOON_KEYS
    assert "HourGlass4.Conv2.weight" not in photo2cartoon  # the last hourglass has no residual
    assert set(ref.Discriminator(3, 4, 7).state_dict()) >= DISCRIMINATOR_KEYS


def _reference_generator(kind: str, seed: int, **options: object) -> torch.nn.Module:
    """A reference-layout generator with random weights."""
    if kind == "ugatit":
        return randomise(ref.UgatitGenerator(**options), seed)
    return randomise(ref.Photo2CartoonGenerator(**options), seed)


def _reference_critic(n_layers: int, seed: int) -> torch.nn.Module:
    """A reference critic with random weights and settled spectral-norm vectors."""
    return ref.settle_spectral_vectors(randomise(ref.Discriminator(3, 4, n_layers), seed))


class _Recorded(dict[str, torch.Tensor]):
    """A state dict that remembers which keys were read, to catch weights a forward ignores."""

    def __init__(self, state: dict[str, torch.Tensor]) -> None:
        super().__init__(state)
        self.read: set[str] = set()

    def __getitem__(self, key: str) -> torch.Tensor:
        self.read.add(key)
        return super().__getitem__(key)


def _iln(x: torch.Tensor, rho: torch.Tensor) -> torch.Tensor:
    """``rho * IN(x) + (1 - rho) * LN(x)`` with the reference's unbiased ``torch.var``."""
    inst = (x - x.mean((2, 3), keepdim=True)) / (x.var((2, 3), keepdim=True) + 1e-5).sqrt()
    layer = (x - x.mean((1, 2, 3), keepdim=True)) / (x.var((1, 2, 3), keepdim=True) + 1e-5).sqrt()
    return rho * inst + (1 - rho) * layer


def _reference_ugatit_light(state: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """U-GAT-IT's light generator written out with functional ops on reference-named weights,
    independent of our modules, to check the key mapping against the reference's own order."""

    def conv(x: torch.Tensor, key: str, pad: int, stride: int = 1) -> torch.Tensor:
        return F.conv2d(F.pad(x, [pad] * 4, mode="reflect"), state[key], stride=stride)

    x = F.relu(F.instance_norm(conv(x, "DownBlock.1.weight", 3)))
    x = F.relu(F.instance_norm(conv(x, "DownBlock.5.weight", 1, 2)))
    x = F.relu(F.instance_norm(conv(x, "DownBlock.9.weight", 1, 2)))
    blocks = sorted({int(k.split(".")[1]) for k in state if ".conv_block." in k})
    for index in blocks:
        prefix = f"DownBlock.{index}.conv_block"
        y = F.relu(F.instance_norm(conv(x, f"{prefix}.1.weight", 1)))
        x = x + F.instance_norm(conv(y, f"{prefix}.5.weight", 1))
    gap_w, gmp_w = state["gap_fc.weight"], state["gmp_fc.weight"]
    x = torch.cat((x * gap_w[0, :, None, None], x * gmp_w[0, :, None, None]), 1)
    x = F.relu(F.conv2d(x, state["conv1x1.weight"], state["conv1x1.bias"]))
    style = x.mean((2, 3))
    style = F.relu(F.linear(F.relu(F.linear(style, state["FC.0.weight"])), state["FC.2.weight"]))
    gamma, beta = F.linear(style, state["gamma.weight"]), F.linear(style, state["beta.weight"])
    for i in range(1, len(blocks) + 1):
        p = f"UpBlock1_{i}"
        y = _iln(conv(x, f"{p}.conv1.weight", 1), state[f"{p}.norm1.rho"])
        y = F.relu(y * gamma[:, :, None, None] + beta[:, :, None, None])
        y = _iln(conv(y, f"{p}.conv2.weight", 1), state[f"{p}.norm2.rho"])
        x = x + y * gamma[:, :, None, None] + beta[:, :, None, None]
    for conv_index in (2, 7):
        x = conv(
            F.interpolate(x, scale_factor=2.0, mode="nearest"), f"UpBlock2.{conv_index}.weight", 1
        )
        n = f"UpBlock2.{conv_index + 1}"
        x = F.relu(_iln(x, state[f"{n}.rho"]) * state[f"{n}.gamma"] + state[f"{n}.beta"])
    return torch.tanh(conv(x, "UpBlock2.11.weight", 3))


def test_ugatit_loading_matches_an_independent_reference_forward() -> None:
    reference = _reference_generator("ugatit", 0, ngf=4, n_blocks=2, img_size=32, light=True)
    state = reference.state_dict()
    ours = generator_from_reference(state).eval()
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        expected = _reference_ugatit_light(state, images)
        assert torch.allclose(ours(images), expected, atol=1e-5)


def _reference_photo2cartoon_light(
    state: dict[str, torch.Tensor], x: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """photo2cartoon's light ``ResnetGenerator`` (minivision-ai/photo2cartoon, models/networks.py)
    written out with functional ops on reference-named weights, independent of our modules.

    Returns ``(image, cam_logit, heatmap)`` as the reference's forward does. Biases are read
    exactly where the reference's layers have them, so a dropped or invented bias fails here.
    """

    def conv(
        x: torch.Tensor, name: str, pad: int = 0, stride: int = 1, bias: bool = False
    ) -> torch.Tensor:
        if pad:
            x = F.pad(x, [pad] * 4, mode="reflect")
        return F.conv2d(
            x, state[f"{name}.weight"], state[f"{name}.bias"] if bias else None, stride=stride
        )

    def linear(x: torch.Tensor, name: str) -> torch.Tensor:  # every Linear here has a bias
        return F.linear(x, state[f"{name}.weight"], state[f"{name}.bias"])

    def in_relu(x: torch.Tensor) -> torch.Tensor:
        return F.relu(F.instance_norm(x))

    def conv_block(x: torch.Tensor, name: str) -> torch.Tensor:
        # ConvBlock: three chained IN-ReLU-pad-3x3 branches (C/2, C/4, C/4), concatenated, plus
        # the input; its 1x1 ConvBlock4 projection only runs when channels differ (never here).
        x1 = conv(in_relu(x), f"{name}.ConvBlock1.3", pad=1)
        x2 = conv(in_relu(x1), f"{name}.ConvBlock2.3", pad=1)
        x3 = conv(in_relu(x2), f"{name}.ConvBlock3.3", pad=1)
        return x + torch.cat((x1, x2, x3), 1)

    def hourglass(x: torch.Tensor, name: str, use_res: bool = True) -> torch.Tensor:
        block, skips, y = f"{name}.HG.0", [], x
        for level in range(1, 5):  # skip at this scale, then avg-pool and go one level down
            skips.append(conv_block(y, f"{block}.ConvBlock{level}_1"))
            y = conv_block(F.avg_pool2d(y, 2), f"{block}.ConvBlock{level}_2")
        y = conv_block(y, f"{block}.ConvBlock5")
        for level, skip in zip(range(6, 10), reversed(skips), strict=True):
            up = conv_block(y, f"{block}.ConvBlock{level}")
            y = F.interpolate(up, scale_factor=2, mode="nearest") + skip
        y = conv_block(y, f"{name}.HG.1")
        y = in_relu(conv(y, f"{name}.HG.2"))
        tmp_out = conv(y, f"{name}.Conv1", bias=True)  # the 3-channel side output
        if not use_res:
            return tmp_out
        return x + conv(y, f"{name}.Conv2", bias=True) + conv(tmp_out, f"{name}.Conv3", bias=True)

    def soft_adalin(
        x: torch.Tensor, name: str, content: torch.Tensor, style: torch.Tensor
    ) -> torch.Tensor:
        def two_layer(f: torch.Tensor, mlp: str) -> torch.Tensor:
            return linear(F.relu(linear(f, f"{mlp}.0")), f"{mlp}.2")

        w_gamma, w_beta = state[f"{name}.w_gamma"], state[f"{name}.w_beta"]
        gamma = (1 - w_gamma) * linear(style, f"{name}.s_gamma") + w_gamma * two_layer(
            content, f"{name}.c_gamma"
        )
        beta = (1 - w_beta) * linear(style, f"{name}.s_beta") + w_beta * two_layer(
            content, f"{name}.c_beta"
        )
        normed = _iln(x, state[f"{name}.norm.rho"])
        return normed * gamma[:, :, None, None] + beta[:, :, None, None]

    x = in_relu(conv(x, "ConvBlock1.1", pad=3))
    x = hourglass(hourglass(x, "HourGlass1"), "HourGlass2")
    x = in_relu(conv(x, "DownBlock1.1", pad=1, stride=2))
    x = in_relu(conv(x, "DownBlock2.1", pad=1, stride=2))
    n_blocks = len({k.split(".")[0] for k in state if k.startswith("EncodeBlock")})
    content = []
    for i in range(1, n_blocks + 1):
        y = in_relu(conv(x, f"EncodeBlock{i}.conv_block.1", pad=1))
        x = x + F.instance_norm(conv(y, f"EncodeBlock{i}.conv_block.5", pad=1))
        content.append(x.mean((2, 3)))
    cam_logit = torch.cat((linear(x.mean((2, 3)), "gap_fc"), linear(x.amax((2, 3)), "gmp_fc")), 1)
    gap_w, gmp_w = state["gap_fc.weight"], state["gmp_fc.weight"]
    x = torch.cat((x * gap_w[0, :, None, None], x * gmp_w[0, :, None, None]), 1)
    x = F.relu(conv(x, "conv1x1", bias=True))
    heatmap = x.sum(1, keepdim=True)
    style = F.relu(linear(F.relu(linear(x.mean((2, 3)), "FC.0")), "FC.2"))
    # DecodeBlock1 takes the deepest encoder block's content features, DecodeBlock<n> the first.
    for i, features in zip(range(1, n_blocks + 1), reversed(content), strict=True):
        p = f"DecodeBlock{i}"
        y = F.relu(soft_adalin(conv(x, f"{p}.conv1", pad=1), f"{p}.norm1", features, style))
        x = x + soft_adalin(conv(y, f"{p}.conv2", pad=1), f"{p}.norm2", features, style)
    for up in ("UpBlock1", "UpBlock2"):
        x = conv(F.interpolate(x, scale_factor=2, mode="nearest"), f"{up}.2", pad=1)
        lin = f"{up}.3"
        x = F.relu(_iln(x, state[f"{lin}.rho"]) * state[f"{lin}.gamma"] + state[f"{lin}.beta"])
    x = hourglass(hourglass(x, "HourGlass3"), "HourGlass4", use_res=False)
    return torch.tanh(conv(x, "ConvBlock2.1", pad=3)), cam_logit, heatmap


def test_photo2cartoon_loading_matches_an_independent_reference_forward() -> None:
    reference = _reference_generator("photo2cartoon", 8, ngf=8, img_size=32, light=True)
    ours = generator_from_reference(reference.state_dict()).eval()
    state = _Recorded(reference.state_dict())
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        expected = _reference_photo2cartoon_light(state, images)
        actual = ours.forward_with_attention(images)
    for name, mine, theirs in zip(("image", "cam_logit", "heatmap"), actual, expected, strict=True):
        assert mine.shape == theirs.shape, name
        assert torch.allclose(mine, theirs, atol=1e-5), name
    # Everything is used but the hourglass blocks' 1x1 projections (in == out channels there),
    # which the released files hold all the same.
    assert set(state) - state.read == {k for k in state if ".ConvBlock4." in k}


def _reference_discriminator(
    state: dict[str, torch.Tensor], x: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The U-GAT-IT / photo2cartoon ``Discriminator`` in eval mode, functionally, on reference
    names; returns ``(out, cam_logit, heatmap)`` as its forward does.

    Eval-mode spectral norm: ``weight_orig / sigma`` with ``sigma = u . (W_mat v)`` from the
    stored vectors, no power iteration. The CAM re-weighting uses ``weight_orig`` itself: the
    reference reads it as ``list(fc.parameters())[0]``, the raw parameter under spectral norm.
    """

    def normalised(name: str) -> torch.Tensor:
        weight = state[f"{name}.weight_orig"]
        sigma = torch.dot(state[f"{name}.weight_u"], weight.flatten(1) @ state[f"{name}.weight_v"])
        return weight / sigma

    def padded(x: torch.Tensor) -> torch.Tensor:
        return F.pad(x, [1] * 4, mode="reflect")

    convs = sorted(
        int(k.split(".")[1]) for k in state if re.fullmatch(r"model\.\d+\.weight_orig", k)
    )
    for position, index in enumerate(convs):
        stride = 1 if position == len(convs) - 1 else 2  # all stride 2 but the last
        name = f"model.{index}"
        x = F.conv2d(padded(x), normalised(name), state[f"{name}.bias"], stride=stride)
        x = F.leaky_relu(x, 0.2)
    gap_logit = F.linear(x.mean((2, 3)), normalised("gap_fc"))
    gmp_logit = F.linear(x.amax((2, 3)), normalised("gmp_fc"))
    gap_w, gmp_w = state["gap_fc.weight_orig"], state["gmp_fc.weight_orig"]
    x = torch.cat((x * gap_w[0, :, None, None], x * gmp_w[0, :, None, None]), 1)
    x = F.leaky_relu(F.conv2d(x, state["conv1x1.weight"], state["conv1x1.bias"]), 0.2)
    heatmap = x.sum(1, keepdim=True)
    out = F.conv2d(padded(x), normalised("conv"))
    return out, torch.cat((gap_logit, gmp_logit), 1), heatmap


@pytest.mark.parametrize(("n_layers", "size"), [(5, 32), (7, 128)])
def test_discriminator_loading_matches_an_independent_reference_forward(
    n_layers: int, size: int
) -> None:
    state = _reference_critic(n_layers, seed=n_layers).state_dict()
    critic = discriminator_from_reference(state).eval()
    buffers = {k: v.clone() for k, v in critic.state_dict().items()}
    recorded = _Recorded(state)
    images = torch.rand(2, 3, size, size) * 2 - 1
    with torch.no_grad():
        expected = _reference_discriminator(recorded, images)
        actual = critic(images)
    for name, mine, theirs in zip(("out", "cam_logit", "heatmap"), actual, expected, strict=True):
        assert mine.shape == theirs.shape, name
        assert torch.allclose(mine, theirs, atol=1e-5), name
    assert recorded.read == set(state)
    # Eval mode leaves the stored power-iteration vectors as loaded.
    assert all(torch.equal(v, buffers[k]) for k, v in critic.state_dict().items())


def _reference_networks(kind: str) -> dict[str, torch.nn.Module]:
    """The six reference-layout networks of a release (light generators, as photo2cartoon's)."""
    options = {"ngf": 4, "n_blocks": 2} if kind == "ugatit" else {"ngf": 8, "n_blocks": 2}
    return {
        "genA2B": _reference_generator(kind, 1, img_size=32, light=True, **options),
        "genB2A": _reference_generator(kind, 2, img_size=32, light=True, **options),
        "disGA": _reference_critic(7, 3),
        "disGB": _reference_critic(7, 4),
        "disLA": _reference_critic(5, 5),
        "disLB": _reference_critic(5, 6),
    }


def _save_release(
    networks: dict[str, torch.nn.Module], path: Path, serialization: str, data_parallel: bool
) -> Path:
    """``save``: one torch.save of ``{name: net.state_dict()}`` (``_params_latest.pt`` of a
    multi-GPU photo2cartoon run: of the DataParallel-wrapped nets)."""
    params = {
        name: reference_state_dict(net, data_parallel=data_parallel)
        for name, net in networks.items()
    }
    return save_like_reference(params, path, serialization)


RELEASE_FILES = [
    ("ugatit", "selfie2anime_params_0001000.pt", "legacy", False),
    ("ugatit", "selfie2anime_params_0001000.pt", "zip", False),
    ("photo2cartoon", "photo2cartoon_params_latest.pt", "legacy", True),
]


@pytest.mark.parametrize(("kind", "name", "serialization", "data_parallel"), RELEASE_FILES)
def test_release_file_written_as_the_trainer_writes_it(
    tmp_path: Path, kind: str, name: str, serialization: str, data_parallel: bool
) -> None:
    networks = _reference_networks(kind)
    path = _save_release(networks, tmp_path / name, serialization, data_parallel)
    if not data_parallel:  # control: the trainer's own load (strict load_state_dict per net)
        params = torch.load(path, weights_only=True)
        for net_name, network in networks.items():
            blank = copy.deepcopy(network)
            for tensor in blank.state_dict().values():
                tensor.zero_()
            blank.load_state_dict(params[net_name])
            assert all(torch.equal(v, params[net_name][k]) for k, v in blank.state_dict().items())
    loaded = load_reference_checkpoint(path)
    assert set(loaded) == set(networks)
    for net_name, network in loaded.items():
        saved = networks[net_name].state_dict()
        back = to_reference_state_dict(network)
        assert back.keys() == saved.keys(), net_name
        assert all(torch.equal(back[k], v) for k, v in saved.items()), net_name
    # What the weights compute (the forward tests above cover every layer of each kind).
    forward = _reference_ugatit_light if kind == "ugatit" else _reference_photo2cartoon_light
    images = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        expected = forward(networks["genA2B"].state_dict(), images)
        expected = expected[0] if isinstance(expected, tuple) else expected
        assert torch.allclose(loaded["genA2B"].eval()(images), expected, atol=1e-5)
        expected = _reference_discriminator(networks["disLB"].state_dict(), images)[0]
        assert torch.allclose(loaded["disLB"].eval()(images)[0], expected, atol=1e-5)
    assert loaded["genA2B"].kind == kind and loaded["genA2B"].light


def test_a_generator_only_release_loads_its_generator(tmp_path: Path) -> None:
    """photo2cartoon's test.py reads only ``genA2B`` from ``photo2cartoon_weights.pt``."""
    reference = _reference_generator("photo2cartoon", 9, ngf=8, img_size=32, light=True)
    path = save_like_reference(
        {"genA2B": reference.state_dict()}, tmp_path / "photo2cartoon_weights.pt", "legacy"
    )
    control = ref.Photo2CartoonGenerator(8, 32, light=True)  # test.py: strict load of genA2B
    control.load_state_dict(torch.load(path, weights_only=True)["genA2B"])
    loaded = load_reference_checkpoint(path)
    assert list(loaded) == ["genA2B"]
    images = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        expected = _reference_photo2cartoon_light(reference.state_dict(), images)[0]
        assert torch.allclose(loaded["genA2B"].eval()(images), expected, atol=1e-5)


def test_data_parallel_prefix_is_accepted() -> None:
    reference = _reference_critic(4, 7)
    state = reference_state_dict(reference, data_parallel=True)
    assert all(k.startswith("module.") for k in state)
    critic = discriminator_from_reference(state).eval()
    renamed = from_reference_state_dict(critic, state)
    assert renamed.keys() == critic.state_dict().keys()
    images = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        expected = _reference_discriminator(reference.state_dict(), images)[0]
        assert torch.allclose(critic(images)[0], expected, atol=1e-5)


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        (
            lambda: ref.Photo2CartoonGenerator(8, 64, light=False),
            {"kind": "photo2cartoon", "ngf": 8, "img_size": 64, "light": False, "n_res": 4},
        ),
        (
            lambda: ref.UgatitGenerator(4, 3, 64, light=False),
            {"kind": "ugatit", "ngf": 4, "img_size": 64, "light": False, "n_res": 3},
        ),
        (
            lambda: ref.UgatitGenerator(4, 6, 256, light=True),
            {"kind": "ugatit", "ngf": 4, "img_size": 256, "light": True, "n_res": 6},
        ),
    ],
)
def test_generator_settings_are_read_off_the_weights(reference, expected: dict) -> None:
    config = infer_generator_config(reference().state_dict())
    assert config == {**expected, "in_channels": 3, "out_channels": 3}


def test_mismatches_name_the_keys() -> None:
    generator = Generator("ugatit", ngf=4, img_size=32, n_res=2)
    reference = ref.UgatitGenerator(4, 2, 32, light=True)
    state = reference.state_dict()
    del state["UpBlock2.11.weight"]
    with pytest.raises(CheckpointMismatchError, match=r"head\.1\.weight"):
        from_reference_state_dict(generator, state)
    state = reference.state_dict()
    state["HourGlass1.Conv1.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointMismatchError, match=r"HourGlass1\.Conv1\.weight"):
        from_reference_state_dict(generator, state)


def test_a_file_of_something_else_is_a_user_error(tmp_path: Path) -> None:
    from src.common.errors import UserError

    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(UserError, match="genA2B"):
        load_reference_checkpoint(tmp_path / "other.pt")
