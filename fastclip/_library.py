"""Loads the compiled library, ``fastclip._C``, once: importing it registers ``torch.ops.fastclip.*``
and brings the data it exports (the shared tensor layouts, torch's clip epsilon, what was built).
A library that fails to load raises an ImportError that says what to run.

``FASTCLIP_CPU_KERNELS`` in the environment at import chooses what runs the ops on CPU tensors:
unset, ``""`` or ``"native"``, the CPU kernels of ``_C`` (csrc/cpu); ``"cuda"``, the CUDA entry
points and kernels (csrc/cuda) on the CPU execution layer (csrc/simt), ``fastclip._cuda_on_cpu``,
loaded after ``_C`` (which then registers no CPU kernel). Any other value raises an ImportError."""

import importlib
import importlib.util
import os

import torch

__all__ = ["build_info"]

_BUILD_HINT = (
    "Build it by running `pip install --no-build-isolation -e .` from the fastclip repository root "
    "(FASTCLIP_CUDA=0 for a CPU-only build)."
)
_CPU_KERNELS_CHOICES = {"": "native", "native": "native", "cuda": "cuda"}
_LAYER = "fastclip._cuda_on_cpu"


def _load_error(error: BaseException, library: str = "fastclip._C") -> ImportError:
    """The ImportError raised in place of ``error``, naming what failed and what to run."""
    message = f"fastclip: the compiled library {library} failed to load ({type(error).__name__}: {error}). "
    message += _BUILD_HINT
    if "undefined symbol" in str(error):
        message += (
            f" An undefined symbol means it was built against another torch than the one imported "
            f"(torch {torch.__version__}): it must be rebuilt after changing torch versions."
        )
    return ImportError(message)


def _cpu_kernels_choice() -> str:
    """``"native"`` or ``"cuda"``, from FASTCLIP_CPU_KERNELS; read before ``_C`` loads, as ``_C`` reads it too."""
    value = os.environ.get("FASTCLIP_CPU_KERNELS", "")
    if value not in _CPU_KERNELS_CHOICES:
        raise ImportError(
            f"fastclip: FASTCLIP_CPU_KERNELS must be unset, 'native' (fastclip's CPU kernels, the "
            f"default) or 'cuda' (the CUDA kernels on the CPU execution layer), got {value!r}"
        )
    return _CPU_KERNELS_CHOICES[value]


_CPU_KERNELS = _cpu_kernels_choice()

try:
    from . import _C
except (ImportError, OSError) as error:
    raise _load_error(error) from error
_MISSING = [name for name in ("layouts", "clip_eps", "build_info", "grads_of") if not hasattr(_C, name)]
if _MISSING:  # built from older sources
    raise ImportError(
        f"fastclip: the compiled library {_C.__file__} is older than the Python sources "
        f"(it has no {', '.join(_MISSING)}). {_BUILD_HINT}"
    )


def _layer_built() -> bool:
    """Whether fastclip._cuda_on_cpu was built (found, not loaded)."""
    return importlib.util.find_spec(_LAYER) is not None


if _CPU_KERNELS == "cuda":
    if not _layer_built():
        raise ImportError(
            f"fastclip: FASTCLIP_CPU_KERNELS=cuda runs the CPU ops on the CPU execution layer, {_LAYER}, which "
            f"was not built: it is built only when asked for, and needs a CUDA toolkit (no GPU or CUDA torch). "
            f"Rebuild with it from the fastclip repository root: `FASTCLIP_CUDA_ON_CPU=1 pip install "
            f"--no-build-isolation -e .` (CUDA_HOME names the toolkit if it is not found)."
        )
    try:
        importlib.import_module(_LAYER)  # its static initialisers register the CPU kernels
    except (ImportError, OSError) as error:
        raise _load_error(error, _LAYER) from error


def build_info() -> dict:
    """What this build of fastclip contains, and what it runs with.

    Keys: ``cpu_isas`` (tuple of the CPU kernel variants compiled, e.g. ``("generic", "avx2",
    "avx512")``), ``cpu_isa_in_use`` (the variant this process picked: the widest the CPU supports,
    capped by ``FASTCLIP_CPU_ISA``), ``cuda_archs`` (the CUDA architectures compiled, e.g.
    ``"800,900"``; ``""`` for a CPU-only build), ``last_level_cache_bytes`` (the largest CPU cache
    Linux reports, as the CPU kernels read it; 0 when unknown), ``cpu_kernels`` (what runs the ops on CPU tensors:
    ``"native"``, fastclip's CPU kernels, or ``"cuda"``, the CUDA kernels on the CPU execution layer,
    chosen by ``FASTCLIP_CPU_KERNELS`` at import), ``cuda_on_cpu`` (whether that layer,
    ``fastclip._cuda_on_cpu``, was built), ``torch`` (the version of torch imported) and
    ``cuda_available`` (whether torch sees a GPU now).
    """
    info = dict(_C.build_info)
    info["cpu_kernels"] = _CPU_KERNELS
    info["cuda_on_cpu"] = _layer_built()
    info["torch"] = torch.__version__
    info["cuda_available"] = torch.cuda.is_available()
    return info
