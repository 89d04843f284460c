"""Building the CUDA ops extension: it compiles without a GPU (CI has nvcc but no GPU), the disk
cache is hit on the next run, a killed build blocks nothing, and a missing toolkit or a failed
compile gives one warning with the fix instead of an error."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path
from types import ModuleType

import pytest
import torch

import src.stylegan3.ops.cuda as cuda_ops
from src.stylegan3.ops.cuda import build
from tests.conftest import REPO_ROOT

ARCH = "8.0"  # one architecture keeps the compile short

needs_toolkit = pytest.mark.skipif(
    build.find_cuda_home() is None,
    reason="no CUDA toolkit found (no CUDA_HOME, nvcc or /usr/local/cuda): cannot compile",
)


def build_command(cache_root: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "src.stylegan3.ops.cuda.build",
        "--arch",
        ARCH,
        "--cache-root",
        str(cache_root),
    ]


def temp_dirs(cache_root: Path) -> list[Path]:
    return sorted(cache_root.glob(f"{build.TEMP_PREFIX}*"))


@pytest.fixture(scope="module")
def cache_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ops_cache")


@pytest.fixture(scope="module")
def killed_build(cache_root: Path) -> list[Path]:
    """Starts a real build in a subprocess and SIGKILLs it (with its compilers) mid-compile;
    returns the temporary folders it left behind."""
    process = subprocess.Popen(
        build_command(cache_root),
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: the kill reaches ninja and nvcc too
    )
    deadline = time.monotonic() + 120
    while not list(cache_root.glob(f"{build.TEMP_PREFIX}*/build.ninja")):
        assert process.poll() is None, "the build to be killed ended by itself"
        assert time.monotonic() < deadline, "the build to be killed never started compiling"
        time.sleep(0.2)
    time.sleep(1.0)  # let the compilers get going
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    return temp_dirs(cache_root)


@pytest.fixture(scope="module")
def stale_temp_dir(cache_root: Path) -> Path:
    """A leftover from a build killed two days ago, which the next build removes."""
    folder = cache_root / f"{build.TEMP_PREFIX}{build.MODULE_PREFIX}0123456789abcdef-old"
    folder.mkdir()
    (folder / "lock").touch()
    two_days_ago = time.time() - 2 * 24 * 3600
    os.utime(folder, (two_days_ago, two_days_ago))
    return folder


@pytest.fixture(scope="module")
def compiled(
    cache_root: Path, killed_build: list[Path], stale_temp_dir: Path
) -> tuple[ModuleType, float]:
    """The extension, compiled after a killed build into the same cache; and the build time."""
    start = time.perf_counter()
    module = build.build_extension(ARCH, cache_root)
    seconds = time.perf_counter() - start
    print(f"CUDA ops extension: cold build for sm_{ARCH.replace('.', '')} took {seconds:.1f}s")
    return module, seconds


@needs_toolkit
@pytest.mark.slow
def test_extension_compiles_without_gpu(compiled: tuple[ModuleType, float], cache_root: Path):
    module, _ = compiled
    for name in build.EXPORTED_FUNCTIONS:
        assert callable(getattr(module, name)), name
    folder = build.extension_dir(ARCH, cache_root)
    assert build._module_file(folder) is not None


@needs_toolkit
@pytest.mark.slow
def test_killed_build_blocks_nothing(
    compiled: tuple[ModuleType, float],
    killed_build: list[Path],
    stale_temp_dir: Path,
    cache_root: Path,
):
    assert killed_build, "the killed build left no temporary folder to get in the way"
    assert all(folder.exists() for folder in killed_build), "recent leftovers are kept"
    assert not stale_temp_dir.exists(), "leftovers older than a day are removed"
    finished = [p for p in cache_root.iterdir() if p.name.startswith(build.MODULE_PREFIX)]
    assert finished == [build.extension_dir(ARCH, cache_root)]


@needs_toolkit
@pytest.mark.slow
def test_second_build_is_a_cache_hit(compiled: tuple[ModuleType, float], cache_root: Path):
    module, cold_seconds = compiled
    library = build._module_file(build.extension_dir(ARCH, cache_root))
    before = library.stat().st_mtime_ns
    leftovers = temp_dirs(cache_root)

    start = time.perf_counter()
    assert build.build_extension(ARCH, cache_root) is module  # same process: memoised
    assert time.perf_counter() - start < 1.0

    # A new process imports the cached library: no ninja, no nvcc.
    start = time.perf_counter()
    result = subprocess.run(
        build_command(cache_root), cwd=REPO_ROOT, capture_output=True, text=True, timeout=300
    )
    seconds = time.perf_counter() - start
    assert result.returncode == 0, result.stderr
    assert "cache hit" in result.stdout, result.stdout
    assert library.stat().st_mtime_ns == before
    assert temp_dirs(cache_root) == leftovers
    print(f"CUDA ops extension: cached load in a new process took {seconds:.1f}s")
    assert seconds < cold_seconds


@needs_toolkit
@pytest.mark.slow
def test_failed_compile_reports_error_and_log(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    sources = tmp_path / "sources"
    sources.mkdir()
    (sources / "broken.cu").write_text("__global__ void kernel() { this is not cuda; }\n")
    monkeypatch.setattr(build, "SOURCE_DIR", sources)
    monkeypatch.setattr(build, "SOURCES", ("broken.cu",))
    monkeypatch.setattr(build, "HEADERS", ())
    with pytest.raises(build.BuildError) as raised:
        build.build_extension(ARCH, tmp_path / "cache")
    message = str(raised.value)
    assert "error" in message and "broken.cu" in message
    log = Path(message.rsplit("full log: ", 1)[1].strip())
    assert log.is_file() and "broken.cu" in log.read_text()
    assert not temp_dirs(tmp_path / "cache"), "a failed build cleans up its temporary folder"


@pytest.fixture
def fresh_state(monkeypatch: pytest.MonkeyPatch) -> None:
    """get_kernels with a clean per-process memory (no modules, kernels or warnings yet)."""
    monkeypatch.setattr(cuda_ops, "_state", cuda_ops._State())


def test_missing_toolkit_warns_once_and_falls_back(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fresh_state: None
):
    missing = tmp_path / "no-such-cuda"
    monkeypatch.setenv("CUDA_HOME", str(missing))
    monkeypatch.delenv("CUDA_PATH", raising=False)
    monkeypatch.delenv("TOONFORGE_OPS_IMPL", raising=False)
    monkeypatch.setattr(build, "_nvcc_on_path", lambda: None)
    monkeypatch.setattr(build, "_standard_roots", lambda: [])
    # Pretend there is a GPU so that get_kernels gets as far as the build on CPU-only CI.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert cuda_ops.get_kernels(torch.device("cuda", 0)) is None
        assert cuda_ops.get_kernels(torch.device("cuda", 0)) is None
        assert cuda_ops.get_kernels(torch.device("cuda", 1)) is None
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 1, messages
    assert "no CUDA toolkit found" in messages[0]
    assert f"CUDA_HOME={missing}" in messages[0]
    assert "set CUDA_HOME to its folder" in messages[0]


def test_ref_env_never_builds(monkeypatch: pytest.MonkeyPatch, fresh_state: None):
    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("built although TOONFORGE_OPS_IMPL=ref")

    monkeypatch.setenv("TOONFORGE_OPS_IMPL", "ref")
    monkeypatch.setattr(build, "build_extension", fail)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert cuda_ops.get_kernels(torch.device("cuda", 0)) is None


def make_toolkit(root: Path) -> Path:
    (root / "bin").mkdir(parents=True)
    (root / "include").mkdir()
    (root / "bin" / "nvcc").write_text("#!/bin/sh\n")
    (root / "include" / "cuda_runtime.h").write_text("")
    return root


def test_find_cuda_home_checks_each_candidate(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.delenv("CUDA_HOME", raising=False)
    monkeypatch.delenv("CUDA_PATH", raising=False)
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    # An nvcc wrapper script on PATH whose parent folder is no toolkit is passed over ...
    wrapper = tmp_path / "local" / "bin" / "nvcc"
    wrapper.parent.mkdir(parents=True)
    wrapper.write_text('#!/bin/sh\nexec /somewhere/nvcc "$@"\n')
    monkeypatch.setattr(build, "_nvcc_on_path", lambda: wrapper)
    # ... for the standard location matching torch's CUDA major version, even if not newest.
    newest = make_toolkit(tmp_path / "cuda-14.1")
    matching = make_toolkit(tmp_path / "cuda-13.0")
    older = make_toolkit(tmp_path / "cuda-12.8")
    monkeypatch.setattr(build, "_standard_roots", lambda: [tmp_path / "absent", newest, matching])
    assert build.find_cuda_home() == matching
    monkeypatch.setattr(build, "_standard_roots", lambda: [newest, older])
    assert build.find_cuda_home() == newest

    # An explicit, valid CUDA_HOME wins; an invalid one is skipped.
    monkeypatch.setenv("CUDA_HOME", str(older))
    assert build.find_cuda_home() == older
    monkeypatch.setenv("CUDA_HOME", str(tmp_path / "absent"))
    assert build.find_cuda_home() == newest


def test_arch_list_and_gencode_flags(monkeypatch: pytest.MonkeyPatch):
    assert build.resolve_arch_list("8.6; 9.0+PTX") == "8.6;9.0+PTX"
    assert build._gencode_flags("8.6;9.0a+PTX") == [
        "-gencode=arch=compute_86,code=sm_86",
        "-gencode=arch=compute_90a,code=sm_90a",
        "-gencode=arch=compute_90a,code=compute_90a",
    ]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "7.5")
    assert build.resolve_arch_list() == "7.5"
    monkeypatch.delenv("TORCH_CUDA_ARCH_LIST")
    assert build.resolve_arch_list() == build.DEFAULT_ARCH
    with pytest.raises(build.BuildError, match="bad CUDA architecture"):
        build.resolve_arch_list("Ampere")


@needs_toolkit
def test_cache_key_covers_arch_and_cache_root(tmp_path: Path):
    first = build.extension_dir("8.0", tmp_path)
    assert first.parent == tmp_path.absolute()
    assert build.extension_dir("8.0", tmp_path) == first
    assert build.extension_dir("9.0", tmp_path) != first
    assert build.extension_dir("8.0", tmp_path / "other").name == first.name
