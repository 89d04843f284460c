"""Build toonforge's CUDA ops extension once, cache it on disk, and load it.

Cache layout: ``<cache root>/toonforge_ops_<key>/`` holds one built module, where ``<key>``
hashes the sources, the target architectures, the torch, CUDA and Python versions and the
compiler flags, so any change builds anew in its own folder. A build runs in a fresh temporary
folder inside the cache root and is renamed into place when complete. There is no lock file: a
killed build leaves only an orphaned temporary folder (removed after a day), never a lock or a
half-built entry, and concurrent builders race to the rename (the loser keeps its own, equal
result). A cached module is imported directly, without running ninja or nvcc.

``python -m src.stylegan3.ops.cuda.build`` builds into the cache and prints where and how long.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import ModuleType

import torch

from src.common.fileio import current_umask

SOURCE_DIR = Path(__file__).resolve().parent
SOURCES = ("binding.cpp", "bias_act.cu", "upfirdn2d.cu")
HEADERS = ("ops.h",)
EXPORTED_FUNCTIONS = ("upfirdn2d", "bias_act")
DEFAULT_ARCH = "8.0"
CXX_FLAGS = ("-O3",)
CUDA_FLAGS = ("-O3", "-lineinfo")
MODULE_PREFIX = "toonforge_ops_"
TEMP_PREFIX = ".tmp-"
STALE_TEMP_SECONDS = 24 * 3600
LIB_SUFFIX = ".pyd" if os.name == "nt" else ".so"

_ARCH_PATTERN = re.compile(r"^(\d+)\.(\d+)([af]?)(\+PTX)?$")
_VERSION_PATTERN = re.compile(r"cuda-(\d+)(?:\.(\d+))?")

_lock = threading.Lock()
_loaded: dict[Path, ModuleType] = {}


class BuildError(RuntimeError):
    """The extension cannot be built here; the message names what is missing and the fix."""


def default_cache_root() -> Path:
    """``$TOONFORGE_OPS_CACHE``, else ``~/.cache/toonforge/ops``."""
    configured = os.environ.get("TOONFORGE_OPS_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "toonforge" / "ops"


def _is_toolkit(root: Path) -> bool:
    return (root / "bin" / "nvcc").is_file() and (root / "include" / "cuda_runtime.h").is_file()


def _nvcc_on_path() -> Path | None:
    found = shutil.which("nvcc")
    return Path(found).resolve() if found else None


def _toolkit_version(root: Path) -> tuple[int, ...]:
    """(major, minor) from a ``cuda-X.Y`` folder name (links resolved), () when unknown."""
    match = _VERSION_PATTERN.fullmatch(root.resolve().name)
    return tuple(int(part) for part in match.groups() if part is not None) if match else ()


def _standard_roots() -> list[Path]:
    versioned = sorted(Path("/usr/local").glob("cuda-*"), key=_toolkit_version, reverse=True)
    return [Path("/usr/local/cuda"), *versioned, Path("/opt/cuda")]


def find_cuda_home() -> Path | None:
    """The CUDA toolkit folder: ``$CUDA_HOME``/``$CUDA_PATH``, else the one holding the ``nvcc``
    on PATH, else a standard location (one matching torch's CUDA major version first).

    Every candidate must contain ``bin/nvcc`` and ``include/cuda_runtime.h``, which rules out
    e.g. a ``/usr/local/bin/nvcc`` wrapper script whose parent is no toolkit.
    """
    for variable in ("CUDA_HOME", "CUDA_PATH"):
        value = os.environ.get(variable)
        if value and _is_toolkit(Path(value)):
            return Path(value)
    nvcc = _nvcc_on_path()
    if nvcc is not None and _is_toolkit(nvcc.parent.parent):
        return nvcc.parent.parent
    torch_major = int(torch.version.cuda.split(".")[0]) if torch.version.cuda else None
    toolkits = [root for root in _standard_roots() if _is_toolkit(root)]
    # Stable sort: a toolkit of torch's CUDA major version first, else the listed order.
    toolkits.sort(key=lambda root: _toolkit_version(root)[:1] != (torch_major,))
    return toolkits[0] if toolkits else None


def _require_cuda_home() -> Path:
    cuda_home = find_cuda_home()
    if cuda_home is not None:
        return cuda_home
    configured = [
        f"{name}={os.environ[name]}" for name in ("CUDA_HOME", "CUDA_PATH") if os.environ.get(name)
    ]
    checked = ""
    if configured:
        checked = f"{', '.join(configured)} (no bin/nvcc or include/cuda_runtime.h there), "
    raise BuildError(
        f"no CUDA toolkit found (checked {checked}nvcc on PATH, /usr/local/cuda*, /opt/cuda): "
        f"install the CUDA toolkit {torch.version.cuda or ''} matching torch and set CUDA_HOME "
        "to its folder (the one holding bin/nvcc)"
    )


def _split_arches(arch_list: str) -> list[str]:
    return [arch for arch in re.split(r"[;,\s]+", arch_list.strip()) if arch]


def resolve_arch_list(arch_list: str | None = None) -> str:
    """Target architectures: the argument, else the current GPU's compute capability, else
    ``$TORCH_CUDA_ARCH_LIST``, else 8.0 (one architecture keeps the build short)."""
    if not arch_list:
        if torch.cuda.is_available():
            major, minor = torch.cuda.get_device_capability()
            arch_list = f"{major}.{minor}"
        else:
            arch_list = os.environ.get("TORCH_CUDA_ARCH_LIST") or DEFAULT_ARCH
    arches = _split_arches(arch_list)
    bad = [arch for arch in arches if not _ARCH_PATTERN.match(arch)]
    if not arches or bad:
        raise BuildError(
            f"bad CUDA architecture list {arch_list!r}: use e.g. '8.0' or '8.6;9.0+PTX'"
        )
    return ";".join(arches)


def _gencode_flags(arch_list: str) -> list[str]:
    flags = []
    for arch in _split_arches(arch_list):
        major, minor, variant, ptx = _ARCH_PATTERN.match(arch).groups()
        number = f"{major}{minor}{variant}"
        flags.append(f"-gencode=arch=compute_{number},code=sm_{number}")
        if ptx:
            flags.append(f"-gencode=arch=compute_{number},code=compute_{number}")
    return flags


@functools.cache
def _nvcc_version(cuda_home: Path) -> str:
    nvcc = cuda_home / "bin" / "nvcc"
    try:
        result = subprocess.run(
            [str(nvcc), "--version"], capture_output=True, text=True, timeout=60, check=True
        )
    except (OSError, subprocess.SubprocessError) as error:
        raise BuildError(f"{nvcc} does not run ({error}): reinstall the CUDA toolkit") from error
    return result.stdout.strip()


def _cache_key(arch_list: str, cuda_home: Path) -> str:
    digest = hashlib.sha256()
    for name in (*SOURCES, *HEADERS):
        digest.update(name.encode())
        digest.update((SOURCE_DIR / name).read_bytes())
    parts = (
        arch_list,
        torch.__version__,
        str(torch.version.cuda),
        _nvcc_version(cuda_home),
        sys.implementation.cache_tag,
        *CXX_FLAGS,
        *CUDA_FLAGS,
    )
    for part in parts:
        digest.update(part.encode() + b"\0")
    return digest.hexdigest()[:16]


def _extension_dir(arch_list: str, cuda_home: Path, cache_root: Path | None) -> Path:
    root = Path(cache_root) if cache_root is not None else default_cache_root()
    return root.expanduser().absolute() / f"{MODULE_PREFIX}{_cache_key(arch_list, cuda_home)}"


def extension_dir(arch_list: str | None = None, cache_root: Path | None = None) -> Path:
    """The cache folder that holds (or will hold) the module for these settings."""
    return _extension_dir(resolve_arch_list(arch_list), _require_cuda_home(), cache_root)


def _module_file(folder: Path) -> Path | None:
    # torch names the module <folder name>, or <folder name>_v<n> when a module of that name
    # was already built earlier in the same process.
    matches = sorted(folder.glob(f"{folder.name}*{LIB_SUFFIX}"))
    return matches[0] if matches else None


def _import_module_file(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(path.name.split(".")[0], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _load_cached(folder: Path) -> ModuleType | None:
    path = _module_file(folder)
    if path is None:
        return None
    try:
        return _import_module_file(path)
    except (ImportError, OSError):
        shutil.rmtree(folder, ignore_errors=True)  # unusable entry: rebuild it
        return None


def _ninja_package_dir() -> str | None:
    """Folder of the ninja from the ``ninja`` Python package (the venv's bin, usually)."""
    try:
        import ninja
    except ImportError:
        return None
    folder = getattr(ninja, "BIN_DIR", None)
    return folder if folder and shutil.which("ninja", path=folder) else None


def _check_build_tools() -> None:
    if shutil.which("ninja") is None:
        ninja_dir = _ninja_package_dir()
        if ninja_dir is None:
            raise BuildError("ninja not found: install ninja (pip install ninja)")
        # torch runs plain `ninja`: make the venv's ninja findable when the venv is not active.
        os.environ["PATH"] = ninja_dir + os.pathsep + os.environ.get("PATH", "")
    compiler = os.environ.get("CXX", "c++")
    if shutil.which(compiler) is None:
        raise BuildError(
            f"C++ compiler {compiler!r} not found: install g++ (e.g. apt install g++) or set CXX"
        )


def _use_cuda_home(cuda_home: Path) -> None:
    """torch.utils.cpp_extension reads CUDA_HOME when first imported: point it at our toolkit,
    before that import and after it."""
    os.environ["CUDA_HOME"] = str(cuda_home)
    import torch.utils.cpp_extension as cpp_extension

    cpp_extension.CUDA_HOME = str(cuda_home)


def _remove_stale_temp_dirs(root: Path) -> None:
    cutoff = time.time() - STALE_TEMP_SECONDS
    for folder in root.glob(f"{TEMP_PREFIX}{MODULE_PREFIX}*"):
        try:
            if folder.stat().st_mtime < cutoff:
                shutil.rmtree(folder, ignore_errors=True)
        except OSError:
            pass


def _last_lines(text: str, count: int = 20) -> str:
    return "\n".join(text.strip().splitlines()[-count:])


def _compile(folder: Path, arch_list: str, cuda_home: Path, verbose: bool) -> ModuleType:
    """Build into a temporary folder next to `folder`, then rename it to `folder`."""
    _check_build_tools()
    root = folder.parent
    try:
        root.mkdir(parents=True, exist_ok=True)
        temp = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{folder.name}-", dir=root))
    except OSError as error:
        raise BuildError(
            f"cannot write to the build cache {root} ({error}): "
            "set TOONFORGE_OPS_CACHE to a writable folder"
        ) from error
    os.chmod(temp, 0o777 & ~current_umask())  # mkdtemp's 0o700 would hide a shared cache
    _remove_stale_temp_dirs(root)
    _use_cuda_home(cuda_home)
    import torch.utils.cpp_extension as cpp_extension

    log = root / f"{folder.name}.build.log"
    try:
        module = cpp_extension.load(
            name=folder.name,
            sources=[str(SOURCE_DIR / name) for name in SOURCES],
            extra_cflags=list(CXX_FLAGS),
            extra_cuda_cflags=[*CUDA_FLAGS, *_gencode_flags(arch_list)],
            build_directory=str(temp),
            verbose=verbose,
        )
    except Exception as error:
        log.write_text(f"{error}\n")
        shutil.rmtree(temp, ignore_errors=True)
        raise BuildError(
            f"building the CUDA ops failed:\n{_last_lines(str(error))}\nfull log: {log}"
        ) from error
    log.unlink(missing_ok=True)  # an earlier failure's log no longer applies
    if folder.exists() and _module_file(folder) is None:
        shutil.rmtree(folder, ignore_errors=True)  # an unusable leftover, not a finished build
    try:
        os.replace(temp, folder)
    except OSError:
        # Another process finished the same build first; theirs stays. The module we loaded
        # keeps working after its files are deleted (POSIX).
        shutil.rmtree(temp, ignore_errors=True)
    return module


def build_extension(
    arch_list: str | None = None, cache_root: Path | None = None, verbose: bool = False
) -> ModuleType:
    """The compiled extension module, built into the cache on first use (see module doc).

    Raises BuildError (with the fix in its message) when the toolkit, ninja or the compiler is
    missing or compilation fails.
    """
    arch = resolve_arch_list(arch_list)
    cuda_home = _require_cuda_home()
    folder = _extension_dir(arch, cuda_home, cache_root)
    with _lock:
        module = _loaded.get(folder) or _load_cached(folder)
        if module is None:
            module = _compile(folder, arch, cuda_home, verbose)
        _loaded[folder] = module
    return module


def main(argv: list[str] | None = None) -> int:
    """CLI: build (or find) the extension in the cache and report where and how long it took."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--arch",
        help="architectures, e.g. '8.0' or '8.6;9.0+PTX' (default: this GPU, "
        f"else $TORCH_CUDA_ARCH_LIST, else {DEFAULT_ARCH})",
    )
    parser.add_argument("--cache-root", type=Path, help="default: $TOONFORGE_OPS_CACHE or ~/.cache")
    parser.add_argument("--verbose", action="store_true", help="show the compiler commands")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        folder = extension_dir(args.arch, args.cache_root)
        cached = _module_file(folder) is not None
        build_extension(args.arch, args.cache_root, args.verbose)
    except BuildError as error:
        print(f"build failed: {error}", file=sys.stderr)
        return 1
    status = "cache hit" if cached else "built"
    print(f"{status} in {time.perf_counter() - start:.1f}s: {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
