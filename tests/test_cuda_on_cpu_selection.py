"""FASTCLIP_CPU_KERNELS, which chooses at import what runs the ops on CPU tensors: fastclip's CPU
kernels ("native", the default) or the CUDA kernels on the CPU execution layer
(fastclip._cuda_on_cpu, "cuda"); and what build_info says about it."""

import importlib
import importlib.util
import os
import subprocess
import sys

import pytest
from conftest import import_fastclip_failing

import fastclip

LAYER = "fastclip._cuda_on_cpu"


def test_an_unknown_value_is_an_import_error_naming_the_variable():
    env = dict(os.environ, FASTCLIP_CPU_KERNELS="gpu")
    done = subprocess.run([sys.executable, "-c", "import fastclip"], env=env, capture_output=True, text=True)
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: fastclip: FASTCLIP_CPU_KERNELS must be")
    assert "'native'" in last and "'cuda'" in last and "'gpu'" in last


def test_build_info_says_what_runs_the_cpu_ops():
    info = fastclip.build_info()
    expected = "cuda" if os.environ.get("FASTCLIP_CPU_KERNELS") == "cuda" else "native"
    assert info["cpu_kernels"] == expected
    assert info["cuda_on_cpu"] is (importlib.util.find_spec(LAYER) is not None)
    if expected == "native":
        assert LAYER not in sys.modules  # build_info looks for the layer without loading it
    else:
        assert info["cuda_on_cpu"] and LAYER in sys.modules


def test_cuda_without_the_layer_built_says_how_to_build_it(monkeypatch):
    """Imports fastclip afresh (its Python modules; the compiled _C stays loaded) with the layer
    hidden, so it is never loaded here; the modules already loaded are put back afterwards."""
    find_spec = importlib.util.find_spec

    def hide_the_layer():
        monkeypatch.setenv("FASTCLIP_CPU_KERNELS", "cuda")
        monkeypatch.setattr(
            importlib.util, "find_spec", lambda name, *a: None if name == LAYER else find_spec(name, *a)
        )

    error = import_fastclip_failing(monkeypatch, hide_the_layer)
    message = str(error)
    assert "FASTCLIP_CPU_KERNELS=cuda" in message and LAYER in message and "was not built" in message
    assert "FASTCLIP_CUDA_ON_CPU=1 pip install --no-build-isolation -e ." in message and "CUDA toolkit" in message


@pytest.mark.skipif(importlib.util.find_spec(LAYER) is None, reason="the CPU execution layer was not built")
def test_the_layer_needs_no_cuda_runtime():
    """The layer links no CUDA library: a CUDA runtime call left in host code shared with the GPU
    build would be an undefined symbol, failing only when reached (lazy binding)."""
    import shutil

    if shutil.which("nm") is None:
        pytest.skip("nm (binutils) is not installed")
    library = importlib.util.find_spec(LAYER).origin
    symbols = subprocess.run(
        ["nm", "-D", "--undefined-only", library], capture_output=True, text=True, check=True
    ).stdout.split()
    assert not [s for s in symbols if s.startswith(("cuda", "cu")) and not s.startswith("cxa")], symbols
