"""Names for the small tensors that cross the C++/Python boundary, with their indices read from the
compiled library (``fastclip._C.layouts``, made from csrc/common/layouts.h), so no index or size is
copied by hand; and :func:`write_outcome`, the Python twin of C++'s ``write_outcome``
(csrc/common/clip_outcome.h), for the steps that run no stats op.

The members are listed here by name, so the code reads ``ResultSlot.COEF``; their values come
from C++, and tests/test_layouts.py checks that these names are exactly the exported ones.
"""

import enum

import torch

from ._library import _C

_SLOT = _C.layouts["result_slots"]
_ZCLIP = _C.layouts["zclip_state"]
_COUNTER = _C.layouts["autoclip_counters"]
_STOPPED = _C.layouts["autoclip_stopped"]
_GAMMA = _C.layouts["adagc_gamma"]
_SPAM = _C.layouts["stable_spam_row"]
_SKIP_RESULT = _C.layouts["skip_step_result"]
_SKIP_COUNTER = _C.layouts["skip_step_counters"]

#: torch's epsilon in ``max_norm / (total_norm + eps)`` (csrc/common/norm_math.h, kClipEps).
CLIP_EPS: float = _C.clip_eps


class ResultSlot(enum.IntEnum):
    """Slots of the float32 result tensor every step writes (see ``ClipResult``)."""

    NORM = _SLOT["norm"]  # pre-clip total norm
    THRESHOLD = _SLOT["threshold"]  # clip value in force (NaN for per-tensor clippers)
    COEF = _SLOT["coef"]  # factor applied to every grad (1 for per-tensor clippers)
    CLIPPED = _SLOT["clipped"]  # 1 if some grad was scaled by a factor below 1
    NONFINITE = _SLOT["nonfinite"]  # 1 if the total norm was NaN or inf
    GRAD_SCALE = _SLOT["grad_scale"]  # what an attached fused optimizer divides the grads by (1/coef)
    FOUND_INF = _SLOT["found_inf"]  # what it reads to skip the step
    ZSCORE = _SLOT["zscore"]  # ZClip only, NaN elsewhere and during warm-up
    MEAN = _SLOT["mean"]
    STD = _SLOT["std"]


class ZClipState(enum.IntEnum):
    """The header of ZClip's float64 state; the warm-up buffer of norms follows it."""

    MEAN = _ZCLIP["mean"]  # EMA of the norm
    VAR = _ZCLIP["var"]  # EMA of its variance
    COLLECTED = _ZCLIP["collected"]  # warm-up norms collected so far
    INITIALIZED = _ZCLIP["initialized"]  # 1 once the warm-up has set mean and var


class AutoClipCounter(enum.IntEnum):
    """Columns of AutoClip's int64 counters, one row per history."""

    LOWER_SIZE = _COUNTER["lower_size"]  # norms in the lower (max-)heap
    UPPER_SIZE = _COUNTER["upper_size"]  # norms in the upper (min-)heap
    STOPPED = _COUNTER["stopped"]  # an AutoClipStopped value
    WINDOW_COUNT = _COUNTER["window_count"]  # norms in the ring buffer (history_size=N)
    WINDOW_HEAD = _COUNTER["window_head"]  # its next write position


class AutoClipStopped(enum.IntEnum):
    """Values of ``AutoClipCounter.STOPPED``: why a history stopped changing."""

    RUNNING = _STOPPED["running"]
    POISONED = _STOPPED["poisoned"]  # reference mode: a NaN entered, every threshold is NaN
    FULL = _STOPPED["full"]  # the heaps were not grown in time: norms are dropped


class AdaGCGamma(enum.IntEnum):
    """Columns of AdaGC's float64 gamma, one row per tensor."""

    VALUE = _GAMMA["value"]  # EMA of the tensor's clipped norm
    SEEN = _GAMMA["seen"]  # 1 once it has one


class StableSPAMRow(enum.IntEnum):
    """Columns of Stable-SPAM's float64 state, one row per tensor."""

    M_MAX = _SPAM["m_max"]  # AdaClip's EMA of the tensor's largest magnitude
    M_NORM = _SPAM["m_norm"]  # AdaGN's EMA of its norm
    V_NORM = _SPAM["v_norm"]  # and of its squared norm
    STEPS = _SPAM["steps"]  # the steps the bias corrections count


class SkipStepResult(enum.IntEnum):
    """Slots of the float32 result tensor a StepSkipper step writes (see ``SkipResult``)."""

    FACTOR = _SKIP_RESULT["factor"]  # 1 to keep the step, 0 to skip it
    SKIPPED = _SKIP_RESULT["skipped"]  # 1 - factor: an attached optimizer's found_inf
    NONFINITE = _SKIP_RESULT["nonfinite"]  # 1 if the loss or the norm was NaN or inf
    LOSS_MEAN = _SKIP_RESULT["loss_mean"]  # of the earlier losses in the window
    LOSS_STD = _SKIP_RESULT["loss_std"]  # unbiased; NaN with fewer than two
    NORM_MEAN = _SKIP_RESULT["norm_mean"]
    NORM_STD = _SKIP_RESULT["norm_std"]


class SkipStepCounter(enum.IntEnum):
    """The entries of a StepSkipper's int64 counters."""

    FILLED = _SKIP_COUNTER["filled"]  # earlier values the history holds (at most window)
    HEAD = _SKIP_COUNTER["head"]  # the ring buffer's next write position
    STEPS = _SKIP_COUNTER["steps"]  # steps seen
    SKIPPED = _SKIP_COUNTER["skipped"]  # steps skipped


#: Each enum by its key in ``fastclip._C.layouts``.
LAYOUTS = {
    "result_slots": ResultSlot,
    "zclip_state": ZClipState,
    "autoclip_counters": AutoClipCounter,
    "autoclip_stopped": AutoClipStopped,
    "adagc_gamma": AdaGCGamma,
    "stable_spam_row": StableSPAMRow,
    "skip_step_result": SkipStepResult,
    "skip_step_counters": SkipStepCounter,
}

RESULT_SLOTS = len(ResultSlot)  # the result tensor's size
ZCLIP_HEADER = len(ZClipState)  # where ZClip's warm-up buffer starts
AUTOCLIP_COUNTERS = len(AutoClipCounter)
ADAGC_GAMMA = len(AdaGCGamma)
STABLE_SPAM_ROW = len(StableSPAMRow)
SKIP_STEP_RESULT_SLOTS = len(SkipStepResult)
SKIP_STEP_COUNTERS = len(SkipStepCounter)


def empty_result(device) -> torch.Tensor:
    """An uninitialised float32 result tensor on ``device``, for a stats op to write."""
    return torch.empty(RESULT_SLOTS, dtype=torch.float32, device=device)


def _float32(value, op):
    """``op(value)`` in float32: device ops for a tensor (no sync); for a Python number, the same op
    on a CPU tensor (whatever the default device), returned as a number."""
    if isinstance(value, torch.Tensor):
        return op(value.float())
    return op(torch.tensor(float(value), dtype=torch.float32, device="cpu")).item()


def write_outcome(result: torch.Tensor, norm, threshold, coef, nonfinite, policy: str) -> torch.Tensor:
    """Writes the slots every step shares, as C++'s ``write_outcome`` does, from the pre-clip norm,
    the threshold in force, the coefficient applied to the whole list, whether the norm was
    non-finite and the on_nonfinite policy. Each value is a Python number or a 0-d tensor on
    ``result``'s device; nothing syncs the host, and no host data is copied to the device (fills
    for numbers, one stack when some value is a tensor). Returns ``result``."""
    nan = float("nan")
    by_slot = {
        ResultSlot.NORM: norm,
        ResultSlot.THRESHOLD: threshold,
        ResultSlot.COEF: coef,
        ResultSlot.CLIPPED: _float32(coef, lambda c: (c < 1).float()),
        ResultSlot.NONFINITE: _float32(nonfinite, lambda n: n),
        ResultSlot.GRAD_SCALE: _float32(coef, torch.reciprocal),
        ResultSlot.FOUND_INF: _float32(nonfinite, lambda n: n * (policy == "skip")),
        ResultSlot.ZSCORE: nan,
        ResultSlot.MEAN: nan,
        ResultSlot.STD: nan,
    }
    values = [by_slot[slot] for slot in sorted(by_slot)]
    like = next((v for v in values if isinstance(v, torch.Tensor)), None)
    if like is None:
        result.fill_(nan)
        for slot, value in enumerate(values):
            if value == value:  # not NaN: not written by the fill
                result[slot] = value
        return result
    like = like.float()
    return torch.stack(
        [v.float() if isinstance(v, torch.Tensor) else torch.full_like(like, v) for v in values], out=result
    )


def idle_result(device, norm) -> torch.Tensor:
    """The result of a step that scaled nothing (coefficient 1, nothing clipped or non-finite),
    built on the device by fills: no host data is copied, so nothing syncs."""
    return write_outcome(empty_result(device), norm, float("nan"), 1.0, False, "skip")


def entry_outputs(entries: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(result, coef, threshold)``: the buffers a per-entry stats op writes, ``entries`` factors
    and thresholds."""
    coef = torch.empty(entries, dtype=torch.float32, device=device)
    return empty_result(device), coef, torch.empty_like(coef)


class SlotResult:
    """A step's outcome read off the float32 tensor of slots its op wrote (``_values``): each
    attribute of ``_slots`` (name -> slot) is that slot's 0-d view, taken at construction unless
    given; a flag (:meth:`_flag`) is computed when read, so a step launches nothing for results
    nobody looks at. ``ClipResult`` and ``SkipResult`` are built on it."""

    _slots: dict = {}

    def __init__(self, values: torch.Tensor, **given):
        self._values = values
        for name, slot in self._slots.items():
            value = given.get(name)
            setattr(self, name, values[slot] if value is None else value)

    def _flag(self, slot) -> torch.Tensor:
        """Bool device tensor: whether ``slot`` is nonzero (no sync until read)."""
        return self._values[slot] != 0
