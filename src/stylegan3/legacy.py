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
from collections import OrderedDict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy._core import multiarray
from torch import nn

from src.common.checkpoint import (
    file_kind,
    first_line,
    load_checkpoint,
    load_state_dict_checked,
    not_a_model,
)
from src.common.errors import UserError
from src.common.weights import where_to_get
from src.stylegan3 import stylegan2
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
    """Unpickle ``path`` with :class:`RestrictedUnpickler`; persistent objects become records.

    The file is read whole and parsed from memory, so a damaged length field cannot make a read
    allocate more than the file holds. Every failure is one :class:`UserError` line that says
    what the file is: empty, a torch checkpoint, an image, truncated or damaged.
    """
    source = Path(path)
    if not source.is_file():
        raise UserError(f"network pickle {source} does not exist{where_to_get(source)}")
    kind = file_kind(source)
    if kind in ("zip", "torch-legacy"):
        raise UserError(
            f"{source} is a torch checkpoint, not an official NVIDIA network pickle; toonforge "
            "checkpoints need no conversion: pass the file as it is"
        )
    if kind != "pickle":
        raise not_a_model(source, kind, "an official NVIDIA network pickle")
    data = source.read_bytes()
    try:
        return RestrictedUnpickler(io.BytesIO(data), str(source)).load()
    except UserError:
        raise
    except Exception as err:  # parsing an untrusted file: every failure is the file's
        truncated = isinstance(err, EOFError) or "truncated" in str(err)
        raise UserError(
            f"{source} is a {'truncated' if truncated else 'damaged'} network pickle "
            f"({first_line(err)}); download or copy it again"
        ) from None


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


def _stylegan2_kwargs_check(kwargs: dict[str, Any]) -> None:
    synthesis = (
        _named_params(stylegan2.SynthesisNetwork.__init__, "self", "w_dim")
        | _named_params(
            stylegan2.SynthesisBlock.__init__,
            "self",
            "in_channels",
            "out_channels",
            "w_dim",
            "resolution",
            "is_last",
            "use_fp16",
        )
        | _named_params(
            stylegan2.SynthesisLayer.__init__,
            "self",
            "in_channels",
            "out_channels",
            "w_dim",
            "resolution",
            "up",
        )
    )
    top = _named_params(stylegan2.Generator.__init__, "self")
    _check_kwargs(kwargs, top | synthesis, "the StyleGAN2 generator")
    nested = dict(kwargs.get("synthesis_kwargs") or {})
    _check_kwargs(nested, synthesis, "the StyleGAN2 generator's synthesis")
    mapping = _named_params(MappingNetwork.__init__, "self", "z_dim", "c_dim", "w_dim", "num_ws")
    _check_kwargs(dict(kwargs.get("mapping_kwargs") or {}), mapping, "the generator's mapping")


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
            "use_fp16",
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
        "use_fp16",
    ) | {"freeze_layers"}
    _check_kwargs(dict(kwargs.get("block_kwargs") or {}), block, "the discriminator's blocks")
    epilogue = _named_params(
        DiscriminatorEpilogue.__init__, "self", "in_channels", "cmap_dim", "conv_clamp"
    )
    _check_kwargs(dict(kwargs.get("epilogue_kwargs") or {}), epilogue, "the epilogue")
    mapping = _named_params(MappingNetwork.__init__, "self", "z_dim", "c_dim", "w_dim", "num_ws")
    _check_kwargs(dict(kwargs.get("mapping_kwargs") or {}), mapping, "the discriminator's mapping")


# Ranges of the constructor arguments that decide how much memory a network takes: real
# networks sit far inside them, and a damaged file is refused before anything is allocated.
SIZE_LIMITS: dict[str, tuple[int, int]] = {
    "z_dim": (0, 8192),
    "c_dim": (0, 65536),
    "w_dim": (1, 8192),
    "img_resolution": (4, 8192),
    "img_channels": (1, 16),
    "channel_base": (1, 1 << 22),
    "channel_max": (1, 16384),
    "num_layers": (0, 64),
    "num_critical": (0, 64),
    "margin_size": (0, 1024),
    "filter_size": (1, 64),
    "conv_kernel": (1, 15),
    "num_fp16_res": (0, 16),
    "cmap_dim": (1, 8192),
    "mbstd_group_size": (1, 4096),
    "mbstd_num_channels": (0, 64),
    "freeze_layers": (0, 1024),
}
NESTED_KWARGS = ("mapping_kwargs", "block_kwargs", "epilogue_kwargs", "synthesis_kwargs")


def check_sizes(kind: str, config: dict[str, Any], source: str = "the config") -> None:
    """Refuse size arguments (``SIZE_LIMITS``, nested kwargs included) that are not whole numbers
    in range, in one line naming the key: what a damaged or foreign file shows first."""
    entries = [(key, value) for key, value in config.items() if key not in NESTED_KWARGS]
    for group in NESTED_KWARGS:
        nested = config.get(group)
        if nested is not None and not isinstance(nested, dict):
            raise UserError(f"{source}: {kind} records {group} as a {type(nested).__name__}")
        entries += [(f"{group}.{key}", value) for key, value in (nested or {}).items()]
    for key, value in entries:
        limits = SIZE_LIMITS.get(key.rpartition(".")[2])
        if limits is None or value is None:
            continue
        low, high = limits
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise UserError(
                f"{source}: {kind} records {key}={value!r}, not a whole number in {low}..{high}; "
                "the file is damaged or not a StyleGAN network"
            )


def build_network(kind: str, config: dict[str, Any], family: str = "stylegan3") -> nn.Module:
    """Our generator of ``family`` (``kind`` G or G_ema) or discriminator (D) from official kwargs.

    Raises UserError naming any constructor argument our networks do not implement, any size
    out of range, and any other reason the arguments do not build a network.
    """
    check_sizes(kind, config)
    if kind == "D":
        _discriminator_kwargs_check(config)
        cls: type[nn.Module] = Discriminator
    else:
        cls = GENERATORS[family]
        (_stylegan2_kwargs_check if family == "stylegan2" else _generator_kwargs_check)(config)
    try:
        return cls(**config)
    except UserError:
        raise
    except Exception as err:  # recorded arguments are data: any failure is theirs
        raise UserError(
            f"cannot build {kind} from its recorded arguments: {type(err).__name__}: {err}"
        ) from None


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


def _record_config(
    record: PersistentRecord, kind: str, source: str, family: str = "stylegan3"
) -> dict[str, Any]:
    """Named constructor arguments of ``record`` (positional ones mapped onto our signature)."""
    kwargs = record.init_kwargs
    if record.init_args:
        cls = Discriminator if kind == "D" else GENERATORS[family]
        names = [n for n in inspect.signature(cls.__init__).parameters if n != "self"]
        kwargs.update(zip(names, record.init_args, strict=False))
    return _plain(kwargs, f"{source}:{kind}")


# Parameters and buffers that only one family has, in NVIDIA's names.
FAMILY_KEYS: dict[str, dict[str, str]] = {
    "G": {
        "stylegan3": "synthesis.input.freqs",  # SynthesisInput's Fourier features (T and R)
        "stylegan2": "synthesis.b4.const",  # the learned 4x4 constant of StyleGAN2's first block
    },
    "D": {"stylegan2": "b4.out.weight"},  # the epilogue's output layer, in both releases' D
}
GENERATORS: dict[str, type[nn.Module]] = {
    "stylegan3": Generator,
    "stylegan2": stylegan2.Generator,
}


def network_family(kind: str, class_name: str, keys: Iterable[str], source: str) -> str:
    """The family of a pickled network, from the tensors it holds (never from its class name:
    NVIDIA's pickles record bare names such as ``Generator`` for every family).

    ``kind`` is G, G_ema or D. Unknown networks, and families toonforge cannot build yet, are one
    line saying what was found.
    """
    role = "D" if kind == "D" else "G"
    names = set(keys)
    for family, key in FAMILY_KEYS[role].items():
        if key in names:
            if role == "G" and family not in GENERATORS:
                raise UserError(
                    f"{source}: {kind} is a {family} generator (it has {key}); toonforge loads "
                    f"{', '.join(GENERATORS)} generators"
                )
            return family
    wanted = " or ".join(f"{key} ({family})" for family, key in FAMILY_KEYS[role].items())
    found = ", ".join(sorted(names)[:4]) or "no tensors"
    raise UserError(
        f"{source}: {kind} ({class_name!r}) is no StyleGAN network toonforge knows: it lacks "
        f"{wanted}; found {found}"
    )


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
        tensors = flatten_state(record)
        family = network_family(kind, record.class_name, tensors, source)
        config = _record_config(record, kind, source, family)
        check_sizes(kind, config, source)
        module = build_network(kind, config, family)
        load_state_dict_checked(module, tensors, f"{source} ({kind})")
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
    if file_kind(source) not in ("zip", "torch-legacy"):
        return load_official_pickle(source)
    checkpoint = load_checkpoint(source)
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        raise UserError(f"{source} is not a {FORMAT} checkpoint; convert it with stylegan3.convert")
    result: dict[str, Any] = {"configs": {}}
    for kind in NETWORKS:
        entry = checkpoint.get(kind)
        if not (
            isinstance(entry, dict)
            and isinstance(entry.get("config"), dict)
            and isinstance(entry.get("state_dict"), dict)
        ):
            raise UserError(f"{source} is a damaged {FORMAT} checkpoint: {kind} lacks its weights")
        family = network_family(kind, "checkpoint", entry["state_dict"], str(source))
        module = build_network(kind, entry["config"], family)
        load_state_dict_checked(module, entry["state_dict"], f"{source} ({kind})")
        result[kind] = module
        result["configs"][kind] = entry["config"]
    result["augment_pipe"] = checkpoint.get("augment_pipe")
    result["training_set_kwargs"] = checkpoint.get("training_set_kwargs")
    return result
