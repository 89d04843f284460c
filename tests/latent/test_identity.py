"""The shared face-identity module: ArcFace IResNet-50 with the key layout of insightface's
released backbones, loaded by name, and the identity encoder's crop and similarity."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from src.common.errors import UserError
from src.common.faceid import (
    FACE_SIZE,
    IdentityEncoder,
    ffhq_face_crop,
    iresnet50,
    load_identity_encoder,
)


def bn(prefix: str, channels: int) -> dict[str, tuple[int, ...]]:
    return {
        f"{prefix}.weight": (channels,),
        f"{prefix}.bias": (channels,),
        f"{prefix}.running_mean": (channels,),
        f"{prefix}.running_var": (channels,),
        f"{prefix}.num_batches_tracked": (),
    }


def reference_r50_layout() -> dict[str, tuple[int, ...]]:
    """insightface arcface_torch ``iresnet50`` state-dict keys and shapes, written from its
    published structure: stem conv1/bn1/prelu; layer1-4 of 3, 4, 14, 3 IBasicBlocks (bn1, conv1,
    bn2, prelu, conv2 with the stride, bn3; the first block of each layer has downsample.0 conv
    1x1 and downsample.1 bn); then bn2, fc (25088 -> 512) and the features batch norm."""
    layout = {"conv1.weight": (64, 3, 3, 3), **bn("bn1", 64), "prelu.weight": (64,)}
    in_ch = 64
    for number, (width, blocks) in enumerate(
        zip((64, 128, 256, 512), (3, 4, 14, 3), strict=True), start=1
    ):
        for block in range(blocks):
            p = f"layer{number}.{block}"
            block_in = in_ch if block == 0 else width
            layout.update(bn(f"{p}.bn1", block_in))
            layout[f"{p}.conv1.weight"] = (width, block_in, 3, 3)
            layout.update(bn(f"{p}.bn2", width))
            layout[f"{p}.prelu.weight"] = (width,)
            layout[f"{p}.conv2.weight"] = (width, width, 3, 3)
            layout.update(bn(f"{p}.bn3", width))
            if block == 0:
                layout[f"{p}.downsample.0.weight"] = (width, block_in, 1, 1)
                layout.update(bn(f"{p}.downsample.1", width))
        in_ch = width
    layout.update(bn("bn2", 512))
    layout["fc.weight"] = (512, 512 * 7 * 7)
    layout["fc.bias"] = (512,)
    layout.update(bn("features", 512))
    return layout


@pytest.fixture(scope="module")
def backbone_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A file as arcface_torch writes ``backbone.pth`` (``torch.save(backbone.state_dict())``),
    filled from the reference layout, the float tensors saved as half as an fp16 run may."""
    generator = torch.Generator().manual_seed(0)
    state = {}
    for key, shape in reference_r50_layout().items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(7)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=generator) + 0.5
        else:
            state[key] = (0.05 * torch.randn(shape, generator=generator)).half()
    path = tmp_path_factory.mktemp("arcface") / "backbone.pth"
    torch.save(state, path)
    return path


def test_iresnet50_matches_insightfaces_key_layout() -> None:
    ours = {k: tuple(v.shape) for k, v in iresnet50().state_dict().items()}
    assert ours == reference_r50_layout()
    assert sum(p.numel() for p in iresnet50().parameters()) == 43_590_848


def test_backbone_file_loads_by_name_and_embeds_unit_vectors(backbone_file: Path) -> None:
    encoder = load_identity_encoder("iresnet50", backbone_file, "identity.weights")
    state = torch.load(backbone_file, weights_only=True)
    assert torch.equal(encoder.net.fc.weight, state["fc.weight"].float())
    faces = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(3)) * 2 - 1
    embeddings = encoder(faces)
    assert embeddings.shape == (2, 512)
    assert torch.allclose(embeddings.norm(dim=1), torch.ones(2), atol=1e-5)
    assert torch.allclose(encoder.distance(faces, embeddings), torch.zeros(2), atol=1e-5)
    encoder.train()
    assert not encoder.net.training


def test_missing_weights_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"identity\.weights: .*gone\.pth does not exist"):
        load_identity_encoder("iresnet50", tmp_path / "gone.pth", "identity.weights")
    with pytest.raises(UserError, match=r"identity\.weights is not set"):
        load_identity_encoder("iresnet50", None, "identity.weights")
    with pytest.raises(UserError, match="unknown identity network"):
        load_identity_encoder("vggface", "random", "identity.weights")


def test_random_stand_in_is_seeded_and_labelled() -> None:
    first = load_identity_encoder("mobilefacenet", "random", "k")
    second = load_identity_encoder("mobilefacenet", "random", "k")
    assert "random" in first.label
    assert isinstance(first, IdentityEncoder)
    faces = torch.rand(1, 3, 128, 128) * 2 - 1
    assert torch.equal(first(faces), second(faces))


def test_ffhq_face_crop_cuts_the_same_box_at_every_size() -> None:
    for size in (64, 256, 1024):
        image = torch.zeros(1, 1, size, size)
        image[
            :,
            :,
            round(size * 35 / 256) : round(size * 223 / 256),
            round(size * 32 / 256) : round(size * 220 / 256),
        ] = 1
        crop = ffhq_face_crop(image)
        assert crop.shape[-2:] == (FACE_SIZE, FACE_SIZE)
        assert torch.allclose(crop, torch.ones_like(crop))
