"""Official-pickle import: persistent objects become our networks, and no pickled code runs."""

from __future__ import annotations

import builtins
import importlib
import os
import pickle
import re
import subprocess
import sys
import zipfile
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from src.common.checkpoint import CheckpointMismatchError
from src.common.errors import UserError
from src.stylegan3.convert import main as convert_main
from src.stylegan3.legacy import UnsafePickleError, load_networks, load_official_pickle
from src.stylegan3.networks import Discriminator, Generator
from tests.stylegan3.tiny import D_KWARGS, G_KWARGS

PERSISTENCE_SRC = """
def _reconstruct_persistent_obj(meta):
    exec(meta["module_src"])
"""
EASYDICT_SRC = """
class EasyDict(dict):
    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name)

    def __setattr__(self, name, value):
        self[name] = value
"""
TRAINING_SET = {"path": "faces.zip", "resolution": 16, "use_labels": False}


class Stubs:
    """Importable stand-ins for ``torch_utils.persistence`` and ``dnnlib.util`` while pickling;
    ``remove`` takes them out of sys.path and sys.modules again before anything is loaded."""

    def __init__(self, root: Path) -> None:
        for package, module, source in [
            ("torch_utils", "persistence", PERSISTENCE_SRC),
            ("dnnlib", "util", EASYDICT_SRC),
        ]:
            (root / package).mkdir(parents=True)
            (root / package / "__init__.py").write_text("")
            (root / package / f"{module}.py").write_text(source)
        self.root = str(root)
        sys.path.insert(0, self.root)
        self.persistence = importlib.import_module("torch_utils.persistence")
        self.util = importlib.import_module("dnnlib.util")

    def remove(self) -> None:
        if self.root in sys.path:
            sys.path.remove(self.root)
        for name in ["torch_utils", "torch_utils.persistence", "dnnlib", "dnnlib.util"]:
            sys.modules.pop(name, None)


@pytest.fixture
def official_stubs(tmp_path: Path) -> Iterator[Stubs]:
    stubs = Stubs(tmp_path / "stubs")
    try:
        yield stubs
    finally:
        stubs.remove()


class Persistent:
    """Pickles like an official persistent object: a call to ``_reconstruct_persistent_obj``."""

    def __init__(self, reconstruct: Callable[..., Any], meta: dict[str, Any]) -> None:
        self.reconstruct = reconstruct
        self.meta = meta

    def __reduce__(self) -> tuple[Any, ...]:
        return self.reconstruct, (self.meta,)


class Reduce:
    """Pickles as ``fn(*args)``: what a malicious pickle asks the loader to call."""

    def __init__(self, fn: Callable[..., Any], *args: Any) -> None:
        self.fn = fn
        self.args = args

    def __reduce__(self) -> tuple[Any, ...]:
        return self.fn, self.args


def persistent_tree(
    module: nn.Module, stubs: Stubs, marker: Path, init_kwargs: dict[str, Any] | None = None
) -> Persistent:
    """``module`` as official persistent records, nested like the official ``__dict__``."""
    state = {
        "training": module.training,
        "_parameters": OrderedDict(module._parameters),
        "_buffers": OrderedDict(module._buffers),
        "_non_persistent_buffers_set": set(),
        "_forward_hooks": OrderedDict(),
        "_modules": OrderedDict(
            (name, persistent_tree(child, stubs, marker)) for name, child in module._modules.items()
        ),
        "_init_args": (),
        "_init_kwargs": stubs.util.EasyDict(init_kwargs or {}),
        "in_size": np.array([36, 36]),
        "sampling_rate": np.float64(16.0),
        "padding": [1, 2, 1, 2],
    }
    meta = {
        "type": "class",
        "version": 4,
        "module_src": f"open({str(marker)!r}, 'w').write('module_src ran')",
        "class_name": f"training.networks_stylegan3.{type(module).__name__}",
        "state": state,
    }
    return Persistent(stubs.persistence._reconstruct_persistent_obj, meta)


def write_official(
    path: Path,
    stubs: Stubs,
    marker: Path,
    edit: Callable[[dict[str, Any]], None] | None = None,
    protocol: int = 4,
) -> tuple[Generator, Generator, Discriminator]:
    """An official-format pickle of small networks of ours; ``edit`` may alter G's top state."""
    torch.manual_seed(0)
    g = Generator(**G_KWARGS).eval()
    g_ema = Generator(**G_KWARGS).eval()
    d = Discriminator(**D_KWARGS).eval()
    with torch.no_grad():
        for layer in g_ema.synthesis.layer_names:
            getattr(g_ema.synthesis, layer).magnitude_ema.fill_(0.7)
    records = {
        "G": persistent_tree(g, stubs, marker, G_KWARGS),
        "D": persistent_tree(d, stubs, marker, D_KWARGS),
        "G_ema": persistent_tree(g_ema, stubs, marker, G_KWARGS),
    }
    records["D"].meta["class_name"] = "training.networks_stylegan2.Discriminator"
    if edit is not None:
        edit(records["G"].meta["state"])
    data = {
        **records,
        "augment_pipe": persistent_tree(nn.Identity(), stubs, marker, {"xflip": 1}),
        "training_set_kwargs": stubs.util.EasyDict(TRAINING_SET),
    }
    path.write_bytes(pickle.dumps(data, protocol=protocol))
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
def test_official_pickle_loads_exactly_and_runs_no_module_src(
    tmp_path: Path, official_stubs: Stubs, protocol: int
) -> None:
    path, marker = tmp_path / "net.pkl", tmp_path / "marker.txt"
    ours = write_official(path, official_stubs, marker, protocol=protocol)
    loaded = load_official_pickle(path)

    assert not marker.exists()
    assert "torch_utils" not in sys.modules and "dnnlib" not in sys.modules
    assert isinstance(loaded["G"], Generator) and isinstance(loaded["D"], Discriminator)
    for ref, got in zip(
        outputs(ours), outputs((loaded["G"], loaded["G_ema"], loaded["D"])), strict=True
    ):
        torch.testing.assert_close(got, ref, rtol=0, atol=0)
    assert loaded["configs"]["G"] == G_KWARGS
    assert loaded["augment_pipe"] == {"xflip": 1}
    assert loaded["training_set_kwargs"] == TRAINING_SET


def test_marker_would_be_written_by_the_official_loader(
    tmp_path: Path, official_stubs: Stubs
) -> None:
    """Control for the tests below: executing ``module_src`` does write the marker file."""
    marker = tmp_path / "marker.txt"
    data = pickle.dumps(persistent_tree(nn.Identity(), official_stubs, marker))
    pickle.loads(data)
    assert marker.exists()


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


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda s: s["_modules"]["mapping"].meta["state"]["_buffers"].pop("w_avg"),
            "1 missing keys: mapping.w_avg",
        ),
        (lambda s: s["_parameters"].update(extra=torch.zeros(2)), "1 unexpected keys: extra"),
        (
            lambda s: (
                s["_modules"]["mapping"]
                .meta["state"]["_modules"]["fc0"]
                .meta["state"]["_parameters"]
                .update(bias=torch.zeros(3))
            ),
            r"1 shape mismatches: mapping.fc0.bias \(3,\)",
        ),
    ],
)
def test_mismatched_state_fails_with_the_keys(
    tmp_path: Path, official_stubs: Stubs, edit: Callable[[dict[str, Any]], None], message: str
) -> None:
    path = tmp_path / "net.pkl"
    write_official(path, official_stubs, tmp_path / "marker.txt", edit=edit)
    with pytest.raises(CheckpointMismatchError, match=message):
        load_official_pickle(path)


def test_unknown_constructor_kwargs_are_named(tmp_path: Path, official_stubs: Stubs) -> None:
    path = tmp_path / "net.pkl"
    write_official(
        path,
        official_stubs,
        tmp_path / "marker.txt",
        edit=lambda s: s["_init_kwargs"].update(fancy_mode=True),
    )
    with pytest.raises(UserError, match="does not implement: fancy_mode"):
        load_official_pickle(path)


def test_convert_round_trip(tmp_path: Path, official_stubs: Stubs, capsys: Any) -> None:
    official, ckpt = tmp_path / "net.pkl", tmp_path / "net.ckpt"
    ours = write_official(official, official_stubs, tmp_path / "marker.txt")

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
