"""NVIDIA's network-pickle format, written the way their code writes it, for loader tests.

What a real pickle holds, from the public documentation of NVIDIA's ``torch_utils.persistence``
(StyleGAN2-ADA and StyleGAN3 repositories) and of their ``training_loop.py``:

* The file is a plain ``pickle.dump`` (protocol 4 by default on Python 3.8+) of a dict built in
  this order: ``training_set_kwargs`` (a plain dict), ``G``, ``D``, ``G_ema``, ``augment_pipe``;
  each network a CPU copy in eval mode with ``requires_grad`` off.
* Every network class and every submodule class is decorated with ``persistent_class``. An
  instance pickles as a call ``torch_utils.persistence._reconstruct_persistent_obj(meta)``, where
  ``meta`` is a dict with ``type='class'``, ``version=6``, ``module_src`` (the source text of the
  whole module that defines the class), ``class_name`` (the bare ``type(obj).__name__``, e.g.
  ``"Generator"``; never a qualified name) and ``state`` (the third field of the module's own
  ``object.__reduce__()``: its ``__dict__``, with ``_parameters``, ``_buffers``, ``_modules``,
  the hook dicts, plain attributes, and ``_init_args`` / ``_init_kwargs``, deep copies of the
  constructor arguments, whose nested keyword dicts are ``dnnlib.EasyDict``).
* Loading with NVIDIA's code executes ``module_src`` in a fresh module and looks the class up by
  its bare name; toonforge must never do that.

The stand-ins below are importable ``torch_utils.persistence`` and ``dnnlib`` modules written
from that description, so a pickle made here goes through Python's own pickler exactly as a real
one does. Our networks play NVIDIA's classes (same parameter and buffer names); their module
source is the stand-in ``module_src``, unless a test passes a hostile one.
"""

from __future__ import annotations

import dataclasses
import importlib
import pickle
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tests.stylegan3.tiny import AugmentPipe

PERSISTENCE_SRC = '''
"""Stand-in for NVIDIA's torch_utils.persistence: pickles a class with its module's source."""
import copy
import inspect
import sys
import types
import uuid

_version = 6
_sources = {}  # one source text per module, so a pickle holds each text once


def persistent_class(orig_class, module_src=None):
    """A subclass of orig_class that pickles as _reconstruct_persistent_obj(meta)."""
    source = module_src
    if source is None:
        module = sys.modules[orig_class.__module__]
        source = _sources.setdefault(module.__name__, inspect.getsource(module))

    class Decorator(orig_class):
        _orig_module_src = source
        _orig_class_name = orig_class.__name__

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self._init_args = copy.deepcopy(args)
            self._init_kwargs = copy.deepcopy(kwargs)

        def __reduce__(self):
            fields = list(super().__reduce__())
            fields += [None] * (3 - len(fields))
            if fields[0] is not _reconstruct_persistent_obj:
                meta = {
                    "type": "class",
                    "version": _version,
                    "module_src": self._orig_module_src,
                    "class_name": self._orig_class_name,
                    "state": fields[2],
                }
                fields[:3] = [_reconstruct_persistent_obj, (meta,), None]
            return tuple(fields)

    Decorator.__name__ = orig_class.__name__
    Decorator.__qualname__ = orig_class.__qualname__
    return Decorator


def _reconstruct_persistent_obj(meta):
    """What NVIDIA's loader does: run module_src, then rebuild the object from its state."""
    module = types.ModuleType("_imported_module_" + uuid.uuid4().hex)
    sys.modules[module.__name__] = module
    exec(meta["module_src"], module.__dict__)
    cls = persistent_class(module.__dict__[meta["class_name"]], meta["module_src"])
    obj = cls.__new__(cls)
    obj.__dict__.update(meta["state"])
    return obj
'''
DNNLIB_INIT_SRC = "from .util import EasyDict\n"
DNNLIB_UTIL_SRC = '''
class EasyDict(dict):
    """dnnlib.util.EasyDict: a dict whose keys are also attributes."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name)

    def __setattr__(self, name, value):
        self[name] = value

    def __delattr__(self, name):
        del self[name]
'''
STUB_MODULES = ("torch_utils", "torch_utils.persistence", "dnnlib", "dnnlib.util")
# What NVIDIA's train.py records for a dataset folder (after it opened the dataset).
TRAINING_SET_KWARGS = {
    "class_name": "training.dataset.ImageFolderDataset",
    "path": "cartoons-16x16.zip",
    "use_labels": False,
    "max_size": 300,
    "xflip": True,
    "resolution": 16,
    "random_seed": 0,
}
# train.py's ``--aug=ada`` with the default ``bgc`` pipe.
AUGMENT_KWARGS = {
    name: 1
    for name in [
        "xflip",
        "rotate90",
        "xint",
        "scale",
        "rotate",
        "aniso",
        "xfrac",
        "brightness",
        "contrast",
        "lumaflip",
        "hue",
        "saturation",
    ]
}


class OfficialModules:
    """Importable ``torch_utils.persistence`` and ``dnnlib`` stand-ins while a pickle is written.

    ``remove`` takes them out of ``sys.path`` and ``sys.modules`` again, so a load afterwards
    finds no module that NVIDIA's loader would need.
    """

    def __init__(self, root: Path) -> None:
        files = {
            "torch_utils/__init__.py": "",
            "torch_utils/persistence.py": PERSISTENCE_SRC,
            "dnnlib/__init__.py": DNNLIB_INIT_SRC,
            "dnnlib/util.py": DNNLIB_UTIL_SRC,
        }
        for name, text in files.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_text(text)
        self.root = str(root)
        sys.path.insert(0, self.root)
        self.persistence = importlib.import_module("torch_utils.persistence")
        self.easydict = importlib.import_module("dnnlib.util").EasyDict

    def remove(self) -> None:
        if self.root in sys.path:
            sys.path.remove(self.root)
        for name in STUB_MODULES:
            sys.modules.pop(name, None)
        for name in [n for n in sys.modules if n.startswith("_imported_module_")]:
            sys.modules.pop(name)

    def easy(self, value: Any) -> Any:
        """``value`` with every nested dict an EasyDict, as train.py builds its kwargs."""
        if isinstance(value, Mapping):
            return self.easydict({k: self.easy(v) for k, v in value.items()})
        return value

    def make_persistent(
        self, module: nn.Module, init_kwargs: Mapping[str, Any], module_src: str | None = None
    ) -> nn.Module:
        """Turn ``module`` and every submodule into persistent-class instances, in place.

        NVIDIA's modules keep only plain values (numbers, strings, lists, numpy arrays) besides
        tensors and submodules; attributes of ours that are dataclasses become plain dicts here,
        so the pickle holds nothing a real one could not. The top module records
        ``init_kwargs`` (nested dicts as EasyDict, the top level a plain dict as Python passes
        ``**kwargs``); submodules record no arguments. ``module_src`` replaces the defining
        modules' source text (a hostile stand-in, say).
        """
        classes: dict[type, type] = {}
        for sub in module.modules():
            for name, value in vars(sub).items():
                vars(sub)[name] = plain_attribute(value)
            cls = type(sub)
            if cls not in classes:
                classes[cls] = self.persistence.persistent_class(cls, module_src)
            sub.__class__ = classes[cls]
            sub._init_args = ()
            sub._init_kwargs = {}
        module._init_kwargs = {k: self.easy(v) for k, v in init_kwargs.items()}
        return module


def plain_attribute(value: Any) -> Any:
    """``value`` with dataclass instances (in lists too) turned into plain dicts."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, list):
        return [plain_attribute(item) for item in value]
    return value


@contextmanager
def official_modules(root: Path) -> Iterator[OfficialModules]:
    """:class:`OfficialModules` under ``root``, removed again on exit."""
    stubs = OfficialModules(root)
    try:
        yield stubs
    finally:
        stubs.remove()


def snapshot(
    stubs: OfficialModules,
    networks: Mapping[str, tuple[nn.Module, Mapping[str, Any]]],
    module_src: str | None = None,
) -> dict[str, Any]:
    """The dict NVIDIA's training loop pickles, from ``{"G": (module, init_kwargs), ...}``.

    Each network is deep-copied, put in eval mode, frozen and made persistent, as the training
    loop's snapshot does; ``augment_pipe`` is the stand-in pipe unless ``networks`` has one.
    """
    import copy

    data: dict[str, Any] = {"training_set_kwargs": dict(TRAINING_SET_KWARGS)}
    entries = dict(networks)
    entries.setdefault("augment_pipe", (AugmentPipe(**AUGMENT_KWARGS), AUGMENT_KWARGS))
    for name in ("G", "D", "G_ema", "augment_pipe"):
        if name not in entries:
            continue
        module, kwargs = entries[name]
        module = copy.deepcopy(module).eval().requires_grad_(False).cpu()
        data[name] = stubs.make_persistent(module, kwargs, module_src)
    return data


def write_pickle(path: Path, data: Mapping[str, Any], protocol: int = 4) -> Path:
    """``pickle.dump`` as the training loop writes its ``network-snapshot-*.pkl``."""
    with path.open("wb") as file:
        pickle.dump(dict(data), file, protocol=protocol)
    return path


def hostile_source(marker: Path, *networks: nn.Module) -> str:
    """A ``module_src`` that writes ``marker`` when executed and then defines every class of
    ``networks`` (and the augment pipe stand-in), as NVIDIA's loader needs to rebuild them."""
    classes = {type(m) for net in (*networks, AugmentPipe()) for m in net.modules()}
    imports = sorted(f"from {cls.__module__} import {cls.__name__}" for cls in classes)
    return "\n".join([f"open({str(marker)!r}, 'w').write('module_src ran')", *imports, ""])


FIXTURE = Path(__file__).resolve().parents[1] / "data" / "stylegan3" / "official-t16.pkl"
FIXTURE_OUTPUTS = FIXTURE.with_suffix(".outputs.pt")
FIXTURE_SEEDS = (0, 1, 2, 3)


def write_fixture() -> None:
    """Write the committed real-format pickle of the tiny test networks and what they output
    (``G_ema`` images for ``FIXTURE_SEEDS`` as ``generate`` draws them, ``D`` logits of those
    halved),
    so tests load it as a user's file is loaded: ``python -m tests.stylegan3.official``."""
    import tempfile

    from src.stylegan3.generate import latents_for
    from src.stylegan3.networks import Discriminator, Generator
    from tests.stylegan3.tiny import D_KWARGS, G_KWARGS

    torch.manual_seed(0)
    g, g_ema, d = Generator(**G_KWARGS), Generator(**G_KWARGS), Discriminator(**D_KWARGS)
    with torch.no_grad():
        for param in g_ema.parameters():
            param.mul_(0.9)
    FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as folder, official_modules(Path(folder)) as stubs:
        networks = {"G": (g, G_KWARGS), "D": (d, D_KWARGS), "G_ema": (g_ema, G_KWARGS)}
        write_pickle(FIXTURE, snapshot(stubs, networks))
    with torch.no_grad():
        images = g_ema.eval()(latents_for(FIXTURE_SEEDS, g_ema.z_dim).float(), None)
        logits = d.eval()(torch.nn.functional.avg_pool2d(images, 2), None)  # D is at 8 px
    torch.save({"seeds": list(FIXTURE_SEEDS), "images": images, "logits": logits}, FIXTURE_OUTPUTS)


if __name__ == "__main__":
    write_fixture()
