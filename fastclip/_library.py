"""Loads the compiled library, ``fastclip._C``, once: importing it registers ``torch.ops.fastclip.*``
and brings the data it exports (the shared tensor layouts, torch's clip epsilon, what was built).
A library that fails to load raises an ImportError that says what to run."""

import torch

__all__ = ["build_info"]

_BUILD_HINT = ("Build it by running `pip install --no-build-isolation -e .` from the fastclip repository root "
               "(FASTCLIP_CUDA=0 for a CPU-only build).")


def _load_error(error: BaseException) -> ImportError:
    """The ImportError raised in place of ``error``, naming what failed and what to run."""
    message = f"fastclip: the compiled library fastclip._C failed to load ({type(error).__name__}: {error}). "
    message += _BUILD_HINT
    if "undefined symbol" in str(error):
        message += (f" An undefined symbol means it was built against another torch than the one imported "
                    f"(torch {torch.__version__}): it must be rebuilt after changing torch versions.")
    return ImportError(message)


try:
    from . import _C
except (ImportError, OSError) as error:
    raise _load_error(error) from error
if not all(hasattr(_C, name) for name in ("layouts", "clip_eps", "build_info")):  # built from older sources
    raise ImportError(f"fastclip: the compiled library {_C.__file__} is older than the Python sources "
                      f"(it has no layouts). {_BUILD_HINT}")


def build_info() -> dict:
    """What this build of fastclip contains, and what it runs with.

    Keys: ``cpu_isas`` (tuple of the CPU kernel variants compiled, e.g. ``("generic", "avx2",
    "avx512")``), ``cpu_isa_in_use`` (the variant this process picked: the widest the CPU supports,
    capped by ``FASTCLIP_CPU_ISA``), ``cuda_archs`` (the CUDA architectures compiled, e.g.
    ``"800,900"``; ``""`` for a CPU-only build), ``torch`` (the version of torch imported) and
    ``cuda_available`` (whether torch sees a GPU now).
    """
    info = dict(_C.build_info)
    info["torch"] = torch.__version__
    info["cuda_available"] = torch.cuda.is_available()
    return info
