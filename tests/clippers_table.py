"""The one table of clipper constructors the test files share.

``CLIPPERS[name](params, **options)`` builds a clipper with the table's hyperparameters, any of
them replaced by ``options``. A file that needs other values (a warm-up that ends before its
spikes, another percentile) names them where it calls, or selects its constructors with
``clippers(names, overrides)``; ``variant(name, **options)`` makes a constructor with options of
its own (``"zclip-zero"``: ZClip with ``on_nonfinite="zero"``). Constructors are never
redefined in a test file. Subprocesses and spawned ranks import this module by name."""

from collections.abc import Callable, Iterable, Mapping

import fastclip
from fastclip.clipper import Clipper

Constructor = Callable[..., Clipper]


def _constructor(cls, **defaults) -> Constructor:
    def make(params, **options):
        return cls(params, **{**defaults, **options})

    make.__qualname__ = make.__name__ = f"make_{cls.__name__}"
    return make


CLIPPERS: dict[str, Constructor] = {
    "zclip": _constructor(fastclip.ZClip, warmup_steps=8, max_grad_norm=2.0),
    "zclip-percentile": _constructor(fastclip.ZClip, warmup_steps=8, mode="percentile", max_grad_norm=None),
    "autoclip": _constructor(fastclip.AutoClip, percentile=25.0),
    "autoclip-window": _constructor(fastclip.AutoClip, percentile=60.0, history_size=9, lag=1),
    "autoclip-tensor": _constructor(fastclip.AutoClip, percentile=40.0, scope="tensor"),
    "adagc": _constructor(fastclip.AdaGC, warmup_steps=10, beta=0.9),
    "normclip": _constructor(fastclip.NormClip, max_norm=1.0),
    "agc": _constructor(fastclip.AGC, clip_factor=0.05),
    "stable-spam": _constructor(fastclip.StableSPAM, gamma1=0.85, gamma2=0.99),
}

# Subsets by what the clippers compute.
TOTAL_NORM = ("zclip", "zclip-percentile", "autoclip", "autoclip-window", "normclip")
PER_TENSOR = ("autoclip-tensor", "adagc", "agc", "stable-spam")
STATELESS = ("normclip", "agc")
STATEFUL = tuple(name for name in CLIPPERS if name not in STATELESS)


def variant(name: str, **options) -> Constructor:
    """``CLIPPERS[name]`` with ``options`` in place of the table's (the caller's own options win)."""
    make = CLIPPERS[name]

    def made(params, **more):
        return make(params, **{**options, **more})

    return made


def clippers(
    names: Iterable[str] = tuple(CLIPPERS), overrides: Mapping[str, Mapping] | None = None
) -> dict[str, Constructor]:
    """The constructors of ``names``, in that order; ``overrides[name]``: the options that file needs."""
    overrides = overrides or {}
    unknown = set(overrides) - set(names)
    assert not unknown, f"overrides for clippers not selected: {sorted(unknown)}"
    return {name: variant(name, **overrides.get(name, {})) for name in names}
