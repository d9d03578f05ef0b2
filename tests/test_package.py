"""The package itself: what it says when the compiled library does not load, build_info, the
old import paths, and type hints on the public API."""

import importlib
import importlib.abc
import inspect
import os
import subprocess
import sys
import types
import typing

import torch
from conftest import import_fastclip_failing

import fastclip


def test_a_missing_library_says_what_to_run(monkeypatch):
    error = import_fastclip_failing(monkeypatch, lambda: monkeypatch.setitem(sys.modules, "fastclip._C", None))
    message = str(error)
    assert "fastclip._C failed to load" in message
    assert "pip install --no-build-isolation -e ." in message and "repository root" in message
    assert "undefined symbol" not in message
    assert isinstance(error.__cause__, ImportError)  # the original error is chained
    assert fastclip.clip_grad_norm_ is sys.modules["fastclip"].clip_grad_norm_  # and the package is back


class _UndefinedSymbol(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "fastclip._C":
            raise ImportError("fastclip/_C.so: undefined symbol: _ZN3c1010TensorImpl17set_autograd_metaE")
        return None


def test_an_undefined_symbol_says_to_rebuild_for_this_torch(monkeypatch):
    error = import_fastclip_failing(
        monkeypatch, lambda: monkeypatch.setattr(sys, "meta_path", [_UndefinedSymbol(), *sys.meta_path])
    )
    message = str(error)
    assert "undefined symbol: _ZN3c10" in message  # what failed
    assert "pip install --no-build-isolation -e ." in message
    assert "rebuilt after changing torch versions" in message and torch.__version__ in message
    assert "undefined symbol" in str(error.__cause__)


def test_a_library_older_than_the_sources_says_to_rebuild(monkeypatch):
    stale = types.ModuleType("fastclip._C")  # what a library built before the layouts were exported holds
    stale.__file__ = "fastclip/_C.so"
    error = import_fastclip_failing(monkeypatch, lambda: monkeypatch.setitem(sys.modules, "fastclip._C", stale))
    assert "older than the Python sources" in str(error) and "pip install --no-build-isolation -e ." in str(error)


def test_build_info_says_what_was_built():
    info = fastclip.build_info()
    assert set(info) == {
        "cpu_isas",
        "cpu_isa_in_use",
        "cuda_archs",
        "last_level_cache_bytes",
        "cpu_kernels",
        "cuda_on_cpu",
        "torch",
        "cuda_available",
    }
    assert isinstance(info["cpu_isas"], tuple) and "generic" in info["cpu_isas"]
    assert info["cpu_isa_in_use"] in info["cpu_isas"]
    assert isinstance(info["cuda_archs"], str)
    assert all(arch.isdigit() for arch in info["cuda_archs"].split(",") if arch)
    assert isinstance(info["last_level_cache_bytes"], int) and info["last_level_cache_bytes"] >= 0
    assert info["torch"] == torch.__version__ and info["cuda_available"] == torch.cuda.is_available()
    info["cpu_isas"] = ()
    assert fastclip.build_info()["cpu_isas"]  # a copy each call


def test_build_info_reports_the_capped_isa():
    env = dict(os.environ, FASTCLIP_CPU_ISA="generic")
    script = "import fastclip; print(fastclip.build_info()['cpu_isa_in_use'])"
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "generic"


def test_adaptive_clip_grad_is_a_function_and_keeps_its_old_path():
    import fastclip.agc
    import fastclip.clip_grad

    assert fastclip.adaptive_clip_grad_ is fastclip.clip_grad.adaptive_clip_grad_ is fastclip.agc.adaptive_clip_grad_
    assert "adaptive_clip_grad_" in fastclip.clip_grad.__all__


def _public_callables():
    import fastclip.distributed
    import fastclip.integrations.lightning
    import fastclip.integrations.megatron

    for module in (
        fastclip,
        fastclip.ops,
        fastclip.distributed,
        fastclip.integrations.megatron,
        fastclip.integrations.lightning,
    ):
        for name in module.__all__:
            obj = getattr(module, name)
            if inspect.isfunction(obj):
                yield f"{module.__name__}.{name}", obj
            elif inspect.isclass(obj):
                for attr, value in vars(obj).items():
                    if inspect.isfunction(value) and (attr == "__init__" or not attr.startswith("_")):
                        yield f"{module.__name__}.{name}.{attr}", value


def test_the_public_api_is_type_hinted():
    missing = []
    for name, fn in _public_callables():
        hints = typing.get_type_hints(fn)  # resolves every annotation
        params = [
            p
            for p in inspect.signature(fn).parameters.values()
            if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        ]
        if any(p.name not in hints for p in params) or (fn.__name__ != "__init__" and "return" not in hints):
            missing.append(name)
    assert not missing, f"public functions without full type hints: {missing}"
