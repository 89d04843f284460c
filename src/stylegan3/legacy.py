"""Import NVIDIA's official StyleGAN3 / StyleGAN2-ADA network pickles without running their code.

An official pickle is a dict (``G``, ``D``, ``G_ema``, ``augment_pipe``, ``training_set_kwargs``)
whose networks are pickled as calls to ``torch_utils.persistence._reconstruct_persistent_obj``
with the full source of their defining module, which NVIDIA's loader executes. Here a restricted
unpickler turns each such call into a plain :class:`PersistentRecord` (the source is dropped
unread), admits only tensor, storage, dtype, numpy and container globals, and refuses every
other global. The records' parameters and buffers are then copied by name into our networks,
built from the recorded constructor kwargs.

Allowed globals (anything else raises :class:`UnsafePickleError`):

* ``torch_utils.persistence._reconstruct_persistent_obj`` -> a stub that returns a record;
* ``dnnlib.util.EasyDict`` -> ``dict``;
* ``torch._utils._rebuild_tensor_v2`` and ``_rebuild_parameter`` (how tensors pickle);
* ``torch.storage._load_from_bytes`` -> the same bytes loaded with ``weights_only=True`` (the
  storage classes inside are torch's own weights-only business, never resolved here);
* ``torch.<dtype>`` (dtype attributes);
* ``collections.OrderedDict``, ``builtins.set`` / ``frozenset`` (protocol 2 module state);
* ``_codecs.encode`` -> latin-1 only (how protocol 2 pickles spell bytes);
* ``numpy.ndarray``, ``numpy.dtype``, ``numpy[._]core.multiarray._reconstruct`` / ``scalar``.

Plain torch modules (``torch.nn.modules...``) are refused: the official networks are built from
persistent classes only, so a pickle holding one is not an official StyleGAN file.
"""

from __future__ import annotations

import _compat_pickle
import inspect
import io
import os
import pickle
import zipfile
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy._core import multiarray
from torch import nn

from src.common.checkpoint import load_checkpoint, load_state_dict_checked
from src.common.errors import UserError
from src.common.weights import where_to_get
from src.stylegan3.discriminator import (
    Discriminator,
    DiscriminatorBlock,
    DiscriminatorEpilogue,
)
from src.stylegan3.generator import Generator, SynthesisLayer, SynthesisNetwork
from src.stylegan3.layers import MappingNetwork

FORMAT = "toonforge.stylegan3/1"
NETWORKS = ("G", "G_ema", "D")


class UnsafePickleError(UserError):
    """A pickle asks for a global outside the allowlist (it could run code), so it is refused."""


class PersistentRecord:
    """What an official persistent object pickles: its class name and ``__dict__`` state."""

    __slots__ = ("class_name", "state")

    def __init__(self, class_name: str, state: dict[str, Any]) -> None:
        self.class_name = class_name
        self.state = state

    def __setstate__(self, state: object) -> None:
        raise pickle.UnpicklingError("persistent objects carry their state in their meta record")

    @property
    def init_args(self) -> tuple:
        return tuple(self.state.get("_init_args") or ())

    @property
    def init_kwargs(self) -> dict[str, Any]:
        return dict(self.state.get("_init_kwargs") or {})


def _persistent_record(meta: dict[str, Any]) -> PersistentRecord:
    """Stands in for ``_reconstruct_persistent_obj``: keeps the state, never reads the source."""
    if not isinstance(meta, dict) or meta.get("type") != "class":
        raise pickle.UnpicklingError("persistent object meta is not a 'class' record")
    state = meta.get("state") or {}
    if not isinstance(state, dict):
        raise pickle.UnpicklingError("persistent object state is not a dict")
    return PersistentRecord(str(meta.get("class_name")), state)


def _storage_from_bytes(data: bytes) -> object:
    """``torch.storage._load_from_bytes`` without its nested unrestricted ``torch.load``."""
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def _latin1_bytes(text: str, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` as protocol 0-2 pickles use it for bytes, limited to latin-1."""
    if encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"refusing _codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


_REPLACED: dict[tuple[str, str], Callable[..., Any] | type] = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _persistent_record,
    ("dnnlib.util", "EasyDict"): dict,
    ("torch.storage", "_load_from_bytes"): _storage_from_bytes,
    ("_codecs", "encode"): _latin1_bytes,
}
_ALLOWED: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("collections", "OrderedDict"): OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}
_NUMPY_CORE = ("numpy.core.multiarray", "numpy._core.multiarray")
_NUMPY_FUNCS = {"_reconstruct": multiarray._reconstruct, "scalar": multiarray.scalar}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only allowlisted globals (see the module docstring)."""

    def __init__(self, file: io.BufferedIOBase, source: str) -> None:
        super().__init__(file)
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        # Protocol 0-2 pickles spell Python 2 names (``__builtin__.set``); map them first.
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        key = (module, name)
        if key in _REPLACED:
            return _REPLACED[key]
        if key in _ALLOWED:
            return _ALLOWED[key]
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        if module in _NUMPY_CORE and name in _NUMPY_FUNCS:
            return _NUMPY_FUNCS[name]
        raise UnsafePickleError(
            f"{self.source} asks to load the global {module}.{name}, which toonforge refuses "
            "(it could run code); only official StyleGAN network pickles can be imported"
        )

    def persistent_load(self, pid: object) -> Any:
        raise UnsafePickleError(f"{self.source} uses persistent ids; it is not a network pickle")


def unpickle_restricted(path: str | os.PathLike[str]) -> Any:
    """Unpickle ``path`` with :class:`RestrictedUnpickler`; persistent objects become records."""
    source = Path(path)
    if not source.is_file():
        raise UserError(f"network pickle {source} does not exist{where_to_get(source)}")
    with source.open("rb") as file:
        try:
            return RestrictedUnpickler(file, str(source)).load()
        except UnsafePickleError:
            raise
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, RuntimeError) as err:
            raise UserError(f"{source} is not a readable network pickle: {err}") from None


def flatten_state(record: PersistentRecord, prefix: str = "") -> dict[str, torch.Tensor]:
    """Parameters and buffers of ``record`` and its submodules under dotted names (``a.b.c``).

    Entries the file holds as None (absent optional buffers) and non-persistent buffers are
    skipped, as ``nn.Module.state_dict`` skips them.
    """
    state = record.state
    skipped = set(state.get("_non_persistent_buffers_set") or ())
    tensors: dict[str, torch.Tensor] = {}
    for group in ("_parameters", "_buffers"):
        for name, value in (state.get(group) or {}).items():
            if value is None or (group == "_buffers" and name in skipped):
                continue
            if not isinstance(value, torch.Tensor):
                raise UserError(f"{prefix}{name} in {record.class_name} is not a tensor")
            tensors[prefix + name] = value.detach()
    for name, child in (state.get("_modules") or {}).items():
        if child is None:
            continue
        if not isinstance(child, PersistentRecord):
            raise UserError(f"submodule {prefix}{name} of {record.class_name} is not a network")
        tensors.update(flatten_state(child, f"{prefix}{name}."))
    return tensors


def _named_params(fn: Callable[..., Any], *exclude: str) -> set[str]:
    params = inspect.signature(fn).parameters.values()
    kinds = (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)
    return {p.name for p in params if p.kind not in kinds and p.name not in exclude}


def _check_kwargs(kwargs: dict[str, Any], allowed: set[str], what: str) -> None:
    unknown = sorted(set(kwargs) - allowed)
    if unknown:
        raise UserError(
            f"{what} has constructor arguments toonforge does not implement: {', '.join(unknown)}"
        )


def _generator_kwargs_check(kwargs: dict[str, Any]) -> None:
    allowed = (
        _named_params(Generator.__init__, "self")
        | _named_params(SynthesisNetwork.__init__, "self")
        | _named_params(
            SynthesisLayer.__init__,
            "self",
            "w_dim",
            "is_torgb",
            "is_critically_sampled",
            "in_spec",
            "out_spec",
        )
    )
    _check_kwargs(kwargs, allowed, "the generator")
    mapping = _named_params(MappingNetwork.__init__, "self", "z_dim", "c_dim", "w_dim", "num_ws")
    _check_kwargs(dict(kwargs.get("mapping_kwargs") or {}), mapping, "the generator's mapping")


def _discriminator_kwargs_check(kwargs: dict[str, Any]) -> None:
    _check_kwargs(kwargs, _named_params(Discriminator.__init__, "self"), "the discriminator")
    block = _named_params(
        DiscriminatorBlock.__init__,
        "self",
        "in_channels",
        "tmp_channels",
        "out_channels",
        "resolution",
        "img_channels",
        "conv_clamp",
    ) | {"freeze_layers"}
    _check_kwargs(dict(kwargs.get("block_kwargs") or {}), block, "the discriminator's blocks")
    epilogue = _named_params(
        DiscriminatorEpilogue.__init__, "self", "in_channels", "cmap_dim", "conv_clamp"
    )
    _check_kwargs(dict(kwargs.get("epilogue_kwargs") or {}), epilogue, "the epilogue")
    mapping = _named_params(MappingNetwork.__init__, "self", "z_dim", "c_dim", "w_dim", "num_ws")
    _check_kwargs(dict(kwargs.get("mapping_kwargs") or {}), mapping, "the discriminator's mapping")


def build_network(kind: str, config: dict[str, Any]) -> nn.Module:
    """Our ``Generator`` (``kind`` G or G_ema) or ``Discriminator`` (D) from official kwargs.

    Raises UserError naming any constructor argument our networks do not implement.
    """
    if kind == "D":
        _discriminator_kwargs_check(config)
        cls: type[nn.Module] = Discriminator
    else:
        _generator_kwargs_check(config)
        cls = Generator
    try:
        return cls(**config)
    except (TypeError, ValueError) as err:
        raise UserError(f"cannot build {kind} from its recorded arguments: {err}") from None


def _plain(value: Any, where: str) -> Any:
    """``value`` as built-in types only (numpy scalars and arrays become numbers and lists), so
    that configs survive ``torch.load(weights_only=True)``."""
    if isinstance(value, dict):
        return {str(k): _plain(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v, where) for v in value]
    if isinstance(value, np.generic | np.ndarray):
        return value.tolist()
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise UserError(f"{where} holds a {type(value).__name__}, not a plain value")


def _record_config(record: PersistentRecord, kind: str, source: str) -> dict[str, Any]:
    """Named constructor arguments of ``record`` (positional ones mapped onto our signature)."""
    kwargs = record.init_kwargs
    if record.init_args:
        cls = Discriminator if kind == "D" else Generator
        names = [n for n in inspect.signature(cls.__init__).parameters if n != "self"]
        kwargs.update(zip(names, record.init_args, strict=False))
    return _plain(kwargs, f"{source}:{kind}")


def _expected_class(kind: str, record: PersistentRecord, source: str) -> None:
    if kind == "D":
        ok = record.class_name.endswith(".Discriminator")
        wanted = "a StyleGAN2/StyleGAN3 discriminator"
    else:
        ok = record.class_name.endswith("networks_stylegan3.Generator")
        wanted = "a StyleGAN3 generator (StyleGAN2-ADA generators use another architecture)"
    if not ok:
        raise UserError(f"{source}: {kind} is a {record.class_name}; toonforge needs {wanted}")


def load_official_pickle(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Our ``G``, ``D`` and ``G_ema`` modules from an official pickle, plus ``configs`` (their
    constructor kwargs), ``augment_pipe`` (its kwargs, or None) and ``training_set_kwargs``."""
    source = str(path)
    data = unpickle_restricted(path)
    if not isinstance(data, dict):
        raise UserError(f"{source} holds a {type(data).__name__}, not an official network dict")
    missing = [k for k in NETWORKS if k not in data]
    if missing:
        raise UserError(f"{source} lacks the networks {', '.join(missing)}")
    result: dict[str, Any] = {"configs": {}}
    for kind in NETWORKS:
        record = data[kind]
        if not isinstance(record, PersistentRecord):
            raise UserError(f"{source}: {kind} is not a persistent network object")
        _expected_class(kind, record, source)
        config = _record_config(record, kind, source)
        module = build_network(kind, config)
        load_state_dict_checked(module, flatten_state(record), f"{source} ({kind})")
        result[kind] = module
        result["configs"][kind] = config
    pipe = data.get("augment_pipe")
    result["augment_pipe"] = (
        _plain(pipe.init_kwargs, f"{source}:augment_pipe")
        if isinstance(pipe, PersistentRecord)
        else None
    )
    training_set = data.get("training_set_kwargs")
    result["training_set_kwargs"] = (
        _plain(training_set, f"{source}:training_set_kwargs") if training_set else None
    )
    return result


def to_checkpoint(networks: dict[str, Any], source: str) -> dict[str, Any]:
    """Our checkpoint format for networks returned by :func:`load_official_pickle`."""
    checkpoint: dict[str, Any] = {"format": FORMAT, "source": source}
    for kind in NETWORKS:
        checkpoint[kind] = {
            "config": networks["configs"][kind],
            "state_dict": {k: v.detach().cpu() for k, v in networks[kind].state_dict().items()},
        }
    checkpoint["augment_pipe"] = networks.get("augment_pipe")
    checkpoint["training_set_kwargs"] = networks.get("training_set_kwargs")
    return checkpoint


def load_networks(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Our networks from either our checkpoint (a zip torch file, loaded ``weights_only``) or an
    official pickle (a raw pickle, loaded with :func:`load_official_pickle`)."""
    source = Path(path)
    if not source.is_file():
        raise UserError(f"network file {source} does not exist{where_to_get(source)}")
    if not zipfile.is_zipfile(source):
        return load_official_pickle(source)
    checkpoint = load_checkpoint(source)
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        raise UserError(f"{source} is not a {FORMAT} checkpoint; convert it with stylegan3.convert")
    result: dict[str, Any] = {"configs": {}}
    for kind in NETWORKS:
        entry = checkpoint[kind]
        module = build_network(kind, entry["config"])
        load_state_dict_checked(module, entry["state_dict"], f"{source} ({kind})")
        result[kind] = module
        result["configs"][kind] = entry["config"]
    result["augment_pipe"] = checkpoint.get("augment_pipe")
    result["training_set_kwargs"] = checkpoint.get("training_set_kwargs")
    return result
