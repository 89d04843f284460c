"""Official-pickle import: persistent objects become our networks, and no pickled code runs."""

from __future__ import annotations

import builtins
import os
import pickle
import re
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from src.common.checkpoint import CheckpointMismatchError
from src.common.errors import UserError
from src.stylegan3.convert import main as convert_main
from src.stylegan3.legacy import UnsafePickleError, load_networks, load_official_pickle
from src.stylegan3.networks import Discriminator, Generator
from tests.stylegan3.official import (
    AUGMENT_KWARGS,
    TRAINING_SET_KWARGS,
    OfficialModules,
    hostile_source,
    official_modules,
    snapshot,
    write_pickle,
)
from tests.stylegan3.tiny import D_KWARGS, G_KWARGS


class Reduce:
    """Pickles as ``fn(*args)``: what a malicious pickle asks the loader to call."""

    def __init__(self, fn: Callable[..., Any], *args: Any) -> None:
        self.fn = fn
        self.args = args

    def __reduce__(self) -> tuple[Any, ...]:
        return self.fn, self.args


def tiny_networks() -> tuple[Generator, Generator, Discriminator]:
    """Small G, G_ema (its magnitude EMAs moved, so the two differ) and D of ours."""
    torch.manual_seed(0)
    g = Generator(**G_KWARGS).eval()
    g_ema = Generator(**G_KWARGS).eval()
    d = Discriminator(**D_KWARGS).eval()
    with torch.no_grad():
        for layer in g_ema.synthesis.layer_names:
            getattr(g_ema.synthesis, layer).magnitude_ema.fill_(0.7)
    return g, g_ema, d


def write_official(
    path: Path,
    stubs: OfficialModules,
    edit: Callable[[Generator], None] | None = None,
    protocol: int = 4,
    module_src: str | None = None,
    g_kwargs: dict[str, Any] | None = None,
) -> tuple[Generator, Generator, Discriminator]:
    """A real-format pickle (see tests/stylegan3/official.py) of :func:`tiny_networks`;
    ``edit`` may alter G before it is pickled. Takes the stand-in modules away afterwards."""
    g, g_ema, d = tiny_networks()
    if edit is not None:
        edit(g)
    kwargs = G_KWARGS if g_kwargs is None else g_kwargs
    data = snapshot(
        stubs, {"G": (g, kwargs), "D": (d, D_KWARGS), "G_ema": (g_ema, kwargs)}, module_src
    )
    write_pickle(path, data, protocol)
    stubs.remove()
    return g, g_ema, d


def outputs(nets: tuple[nn.Module, nn.Module, nn.Module]) -> list[torch.Tensor]:
    g, g_ema, d = nets
    rng = torch.Generator().manual_seed(1)
    z = torch.randn([2, 16], generator=rng)
    images = torch.randn([2, 3, 8, 8], generator=rng)
    with torch.no_grad():
        return [g(z, None), g_ema(z, None), d(images, None)]


@pytest.mark.parametrize("protocol", [2, 4])
def test_real_format_pickle_loads_exactly(
    tmp_path: Path, official_stubs: OfficialModules, protocol: int
) -> None:
    path = tmp_path / "net.pkl"
    ours = write_official(path, official_stubs, protocol=protocol)
    loaded = load_official_pickle(path)

    assert not any(n.split(".")[0] in ("torch_utils", "dnnlib") for n in sys.modules)
    assert isinstance(loaded["G"], Generator) and isinstance(loaded["D"], Discriminator)
    for ref, got in zip(
        outputs(ours), outputs((loaded["G"], loaded["G_ema"], loaded["D"])), strict=True
    ):
        torch.testing.assert_close(got, ref, rtol=0, atol=0)
    assert loaded["configs"]["G"] == G_KWARGS and loaded["configs"]["D"] == D_KWARGS
    assert loaded["augment_pipe"] == AUGMENT_KWARGS
    assert loaded["training_set_kwargs"] == TRAINING_SET_KWARGS


def test_the_fixture_is_what_nvidias_loader_reads(
    tmp_path: Path, official_stubs: OfficialModules
) -> None:
    """Control: the reference way of loading (run module_src, look the bare class name up in
    it) rebuilds the networks from the same bytes, so the format is the real one."""
    path = tmp_path / "net.pkl"
    ours = write_official(path, official_stubs)
    raw = path.read_bytes()
    assert b"_reconstruct_persistent_obj" in raw and b"networks_stylegan3" not in raw
    with official_modules(tmp_path / "again") as stubs:
        data = pickle.loads(raw)
        assert list(data) == ["training_set_kwargs", "G", "D", "G_ema", "augment_pipe"]
        assert type(data["G"]).__name__ == "Generator" and stubs.persistence._version == 6
        for name, module in zip(("G", "G_ema", "D"), ours, strict=True):
            reference = module.state_dict()
            rebuilt = data[name].state_dict()
            assert list(rebuilt) == list(reference)
            assert all(torch.equal(rebuilt[k], v) for k, v in reference.items())


def test_hostile_module_src_is_never_run(tmp_path: Path, official_stubs: OfficialModules) -> None:
    path, marker = tmp_path / "net.pkl", tmp_path / "marker.txt"
    ours = write_official(path, official_stubs, module_src=hostile_source(marker, *tiny_networks()))

    loaded = load_networks(path)
    assert not marker.exists()
    torch.testing.assert_close(
        outputs((loaded["G"], loaded["G_ema"], loaded["D"]))[1], outputs(ours)[1], rtol=0, atol=0
    )
    with official_modules(tmp_path / "again"):  # control: NVIDIA's loader would run it
        pickle.loads(path.read_bytes())
    assert marker.read_text() == "module_src ran"


@pytest.mark.parametrize(
    ("fn", "make_args", "name"),
    [
        (os.system, lambda m: (f"touch {m}",), f"{os.system.__module__}.system"),
        (builtins.eval, lambda m: (f"open({m!r}, 'w')",), "builtins.eval"),
        (subprocess.Popen, lambda m: (["touch", m],), "subprocess.Popen"),
    ],
)
def test_code_calling_pickles_are_refused(
    tmp_path: Path, fn: Callable[..., Any], make_args: Callable[[str], tuple], name: str
) -> None:
    path, marker = tmp_path / "evil.pkl", tmp_path / "marker.txt"
    path.write_bytes(pickle.dumps({"G": Reduce(fn, *make_args(str(marker)))}))
    with pytest.raises(UnsafePickleError, match=rf"{re.escape(str(path))}.*{name}"):
        load_official_pickle(path)
    assert not marker.exists()


def drop_w_avg(g: Generator) -> None:
    g.mapping._buffers.pop("w_avg")


def add_extra(g: Generator) -> None:
    g.register_parameter("extra", nn.Parameter(torch.zeros(2)))


def resize_fc0_bias(g: Generator) -> None:
    g.mapping.fc0.bias = nn.Parameter(torch.zeros(3))


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (drop_w_avg, "1 missing keys: mapping.w_avg"),
        (add_extra, "1 unexpected keys: extra"),
        (resize_fc0_bias, r"1 shape mismatches: mapping.fc0.bias \(3,\)"),
    ],
)
def test_mismatched_state_fails_with_the_keys(
    tmp_path: Path,
    official_stubs: OfficialModules,
    edit: Callable[[Generator], None],
    message: str,
) -> None:
    path = tmp_path / "net.pkl"
    write_official(path, official_stubs, edit=edit)
    with pytest.raises(CheckpointMismatchError, match=message):
        load_official_pickle(path)


def test_unknown_constructor_kwargs_are_named(
    tmp_path: Path, official_stubs: OfficialModules
) -> None:
    path = tmp_path / "net.pkl"
    write_official(path, official_stubs, g_kwargs={**G_KWARGS, "fancy_mode": True})
    with pytest.raises(UserError, match="does not implement: fancy_mode"):
        load_official_pickle(path)


class StyleGAN2Synthesis(nn.Module):
    """The part of a StyleGAN2 synthesis network that tells the family: ``b4.const``."""

    def __init__(self) -> None:
        super().__init__()
        self.b4 = nn.Module()
        self.b4.register_parameter("const", nn.Parameter(torch.zeros(8, 4, 4)))


def test_the_family_comes_from_the_tensors_not_the_class_name(
    tmp_path: Path, official_stubs: OfficialModules
) -> None:
    other = nn.Module()
    other.synthesis = StyleGAN2Synthesis()
    _, g_ema, d = tiny_networks()
    path = write_pickle(
        tmp_path / "sg2.pkl",
        snapshot(official_stubs, {"G": (other, {}), "D": (d, D_KWARGS), "G_ema": (g_ema, {})}),
    )
    # Recognised as a StyleGAN2 generator by its tensors (whatever its class is called), then
    # built from what it records: here nothing, so the build names what is missing.
    found = r"cannot build G from its recorded arguments: TypeError: .*z_dim"
    with pytest.raises(UserError, match=found):
        load_official_pickle(path)
    path = write_pickle(
        tmp_path / "other.pkl",
        snapshot(
            official_stubs,
            {"G": (nn.Linear(2, 3), {}), "G_ema": (nn.Linear(2, 3), {}), "D": (d, D_KWARGS)},
        ),
    )
    message = (
        "G ('Linear') is no StyleGAN network toonforge knows: it lacks synthesis.input.freqs "
        "(stylegan3) or synthesis.b4.const (stylegan2); found bias, weight"
    )
    with pytest.raises(UserError, match=re.escape(message)):
        load_official_pickle(path)


def test_convert_round_trip(tmp_path: Path, official_stubs: OfficialModules, capsys: Any) -> None:
    official, ckpt = tmp_path / "net.pkl", tmp_path / "net.ckpt"
    ours = write_official(official, official_stubs)

    convert_main([f"in={official}", f"out={ckpt}"])

    assert str(ckpt) in capsys.readouterr().out
    assert zipfile.is_zipfile(ckpt)
    raw = torch.load(ckpt, weights_only=True)
    assert raw["format"] == "toonforge.stylegan3/1" and raw["source"] == "net.pkl"
    assert raw["G"]["config"] == G_KWARGS
    reference = outputs(ours)
    for loaded in (load_networks(ckpt), load_networks(official)):
        got = outputs((loaded["G"], loaded["G_ema"], loaded["D"]))
        for ref, out in zip(reference, got, strict=True):
            torch.testing.assert_close(out, ref, rtol=0, atol=0)


def test_convert_errors_are_one_line(tmp_path: Path, capsys: Any) -> None:
    with pytest.raises(SystemExit) as exit_info:
        convert_main([f"in={tmp_path / 'missing.pkl'}"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.count("\n") == 1
    with pytest.raises(SystemExit):
        convert_main([f"in={tmp_path / 'missing.pkl'}", f"out={tmp_path / 'x.ckpt'}"])
    assert "does not exist" in capsys.readouterr().err
