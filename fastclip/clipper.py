"""The stateful clippers' shared machinery: parameters, the step result, state_dict, attach.

A clipper is built like a ``torch.optim`` optimizer, from an iterable of parameters or of param
groups (a group's ``"process_group"`` is honoured, its other keys, such as ``lr``, are ignored, so
``optimizer.param_groups`` works), and ``step()`` clips the parameters' ``.grad`` in place.

Options the clippers share (keywords; AGC takes none of them), written once in :data:`OPTIONS`
and appended to each clipper's docstring, so ``help(fastclip.ZClip)`` says what its ``**options``
are: ``on_nonfinite``, ``reference``, ``process_group``, ``norm_parameters``, ``grad_attr``.
Everything a step computes stays on the grads' device: nothing syncs the host unless
``on_nonfinite="error"``.
"""

import inspect
import textwrap
from collections.abc import Sequence
from typing import NamedTuple

import torch

from . import _ops, _optimizer_feed, ops
from ._grads import DTensorShardCache, grads_in_cpp, present_and_grads
from ._layouts import ResultSlot, SlotResult, empty_result, idle_result
from ._types import Params, ProcessGroups
from ._validation import check_choice, check_grad_attr, check_number, checked, flatten_parameters
from .distributed import (
    as_groups,
    cached_index_tensor,
    check_same_lists_per_key,
    merge_keys,
    norms_across_ranks,
    param_group_keys,
    split_dtensors,
)

__all__ = ["OPTIONS", "Clipper", "ClipResult", "NormClip"]

_POLICIES = ("skip", "zero", "propagate", "error")

# The options every clipper built on Clipper takes, each with one line on what it does: the one
# place they are written, appended to every clipper's docstring (Clipper.__init_subclass__).
OPTIONS = {
    "on_nonfinite": 'what a step whose norm is NaN or inf does (the statistics are never updated by one): "skip" '
    'leaves the grads, and an attached optimizer skips the step; "zero" zeroes the grads; '
    '"propagate" scales them as torch would (NaN grads for a NaN norm); "error" raises '
    "RuntimeError (it reads the norm, so every step syncs the host).",
    "reference": "True reproduces the implementation this clipper is tested against exactly, NaN poisoning of "
    "the statistics included (for parity tests).",
    "process_group": "a torch.distributed group, or a list of groups reduced in turn: the norms are those of "
    "the whole model across the ranks, so every rank computes the same statistics and factor "
    "and scales its own shards. DTensor grads (FSDP2, tensor parallel) need none. A param "
    'group\'s own "process_group" key (a group, a list, or None: whole grads, not reduced) '
    "replaces it for that group's parameters (expert parallelism).",
    "norm_parameters": "the parameters whose grads make the norm, when they differ from those scaled (Megatron "
    "counts shared and tensor-parallel-duplicate parameters once); they take their parameters' "
    'param-group "process_group" unless their own groups carry one. Default: the clipped ones.',
    "grad_attr": "the attribute that holds each parameter's grad, e.g. \"main_grad\" for Megatron's fp32 gradient "
    'buffers (default "grad").',
}
# What differs for one clipper: name -> {option: the line written in place of OPTIONS's}.
_OPTION_NOTES = {
    "NormClip": {"reference": "accepted, and changes nothing: NormClip already is torch's clip_grad_norm_."},
    "AutoClip": {"norm_parameters": OPTIONS["norm_parameters"] + ' With scope="global" only.'},
}
_PER_TENSOR_NORM_PARAMETERS = (
    "not taken (a ValueError): each tensor is clipped against its own norm and "
    "statistics, so there is no total norm to take from other parameters."
)


def _options_doc(cls) -> str:
    """The ``Options`` paragraph of ``cls``'s docstring: each of :data:`OPTIONS` its ``__init__``
    takes, with its default, or why it takes none."""
    signature = inspect.signature(cls.__init__).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in signature.values()) and "on_nonfinite" not in signature:
        names = ", ".join(f"``{name}``" for name in OPTIONS)
        text = (
            f"Options: {cls.__name__} takes none of the options the other clippers share ({names}): it "
            "has no norm statistics to protect from a non-finite step, reads each parameter's own ``.grad``, "
            "and clips each rank's rows of its grads."
        )
        return "\n\n" + "\n".join(textwrap.wrap(text, width=96))
    lines = ["", "", "Options shared by the clippers (beside the arguments above; pass them by keyword):", ""]
    notes = _OPTION_NOTES.get(cls.__name__, {})
    for name, text in OPTIONS.items():
        parameter = signature.get(name) or inspect.signature(Clipper.__init__).parameters[name]
        if name == "norm_parameters" and cls.per_tensor:
            text = _PER_TENSOR_NORM_PARAMETERS
        text = notes.get(name, text)
        default = f'"{parameter.default}"' if isinstance(parameter.default, str) else parameter.default
        lines += textwrap.wrap(f"``{name}={default}``: {text}", width=96, initial_indent="* ", subsequent_indent="  ")
    return "\n".join(lines)


class ClipResult(SlotResult):
    """One step's outcome, as device tensors: reading one (``float(r.norm)``) is when you sync.

    ``norm``: the pre-clip total norm. ``threshold``: the clip value in force. ``coef``: the factor
    applied to every grad (a 0-d tensor), or one per tensor for per-tensor clippers (a 1-d tensor
    in the order of the parameters that had grads). ``clipped``: whether any grad was scaled down.
    ``nonfinite``: whether the norm was NaN or inf. ZClip adds ``zscore``, ``mean`` and ``std``
    (NaN during warm-up and on non-finite steps).
    """

    _slots = {
        "norm": ResultSlot.NORM,
        "threshold": ResultSlot.THRESHOLD,
        "coef": ResultSlot.COEF,
        "zscore": ResultSlot.ZSCORE,
        "mean": ResultSlot.MEAN,
        "std": ResultSlot.STD,
    }
    norm: torch.Tensor
    threshold: torch.Tensor
    coef: torch.Tensor
    zscore: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, values: torch.Tensor, coef: torch.Tensor | None = None, threshold: torch.Tensor | None = None):
        super().__init__(values, coef=coef, threshold=threshold)

    @property
    def clipped(self) -> torch.Tensor:
        """Bool device tensor: whether this step scaled the grads down (no sync until read)."""
        return self._flag(ResultSlot.CLIPPED)

    @property
    def nonfinite(self) -> torch.Tensor:
        """Bool device tensor: whether the norm was inf or NaN, so the statistics were left alone."""
        return self._flag(ResultSlot.NONFINITE)

    def __repr__(self):
        return f"ClipResult(norm={self.norm}, threshold={self.threshold}, coef={self.coef}, clipped={self.clipped})"


class StepGrads(NamedTuple):
    """What a step clips, read by :meth:`Clipper._read_grads`: ``present``, the positions of the
    parameters that have grads (a range when all do); ``grads``, their grads (DTensors' local
    shards), a list or a held list read in C++; ``shards``, the DTensor shards as a held list
    (:class:`fastclip._grads.DTensorShardCache`) or None; ``norm_present`` and ``norm_grads``, the
    same for the norm (those of ``norm_parameters``, else ``present`` and ``grads``); ``keys`` and
    ``order``, how the norm grads' partials are reduced (:meth:`Clipper._keys`); ``device``, where
    the step runs."""

    present: Sequence[int]
    grads: list | torch.ScriptObject
    shards: torch.ScriptObject | None
    norm_present: Sequence[int]
    norm_grads: list | torch.ScriptObject
    keys: list | None
    order: tuple
    device: torch.device


class Clipper:
    """Base class: every clipper's step runs :meth:`_step` (the grads read, DTensors split, an
    empty step, the state's device, the optimizer feed), around its own part, :meth:`_clip`.
    The clippers of a norm define only ``_update(grads, norms, present, device, policy,
    scale_grads)``, which runs the stats op on ``grads`` and returns ``(result values, per-tensor
    coef or None, per-tensor threshold or None)``, and keep their state tensors in
    ``self._state``. ``norms`` is ``(total, per-tensor norms or None)``, or None when the op
    computes them from ``grads`` (the local case: on CUDA the norm, the step and the scale are
    then one launch). Others (StableSPAM, AGC) define ``_clip`` itself."""

    per_tensor = False  # per-tensor norms are needed (AdaGC, AutoClip with scope="tensor")
    folds_into_optimizer = True  # one factor for every grad: an attached fused optimizer can apply it
    takes_held_lists = True  # the op has held_<op> forms: grads read in C++, DTensor shards held
    steps_without_grads = True  # a rank without grads still steps when the norms are reduced across ranks
    feeds_found_inf = True  # an attached optimizer gets found_inf (and grad_scale when folded)
    idle_norm = 0.0  # the norm of a step with no grads

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.__doc__ and "__init__" in vars(cls):  # help(clipper) says what **options are
            cls.__doc__ = inspect.cleandoc(cls.__doc__) + _options_doc(cls)

    def __init__(
        self,
        parameters: Params,
        on_nonfinite: str = "skip",
        reference: bool = False,
        *,
        process_group: ProcessGroups = None,
        norm_parameters: Params | None = None,
        grad_attr: str = "grad",
    ):
        name = type(self).__name__
        spans = []
        self._params = flatten_parameters(parameters, name, spans)
        self._groups = as_groups(process_group)
        # Each parameter's groups, from its param group's "process_group" (None: self._groups),
        # and every param group's in order (see distributed.param_group_keys): once, here.
        self._group_keys, self._key_order = param_group_keys(len(self._params), spans, self._groups)
        self._lists_checked = False
        self.grad_attr = check_grad_attr(grad_attr, name)
        self._norm_params = None
        self._norm_group_keys, self._norm_key_order = None, ()
        if norm_parameters is not None:
            if self.per_tensor:
                raise ValueError(f"{name}: norm_parameters applies to clippers of the total norm, not per-tensor ones")
            spans = []
            self._norm_params = flatten_parameters(norm_parameters, name, spans)
            keys, order = param_group_keys(len(self._norm_params), spans, self._groups)
            own = any("process_group" in entry for *_, entry in spans)
            if not own and self._group_keys is not None:  # each takes its parameter's groups
                of_param = dict(zip(map(id, self._params), self._group_keys))
                keys, order = [of_param.get(id(p)) for p in self._norm_params], self._key_order
            self._norm_group_keys, self._norm_key_order = keys, order
        # Whether the norms are reduced across ranks at all (then a rank with no grads takes part).
        self._reduces = bool(self._groups) or any(self._key_order) or any(self._norm_key_order)
        self._present_keys = [None, None]  # (present positions, their keys) of the last step, params and norm params
        self.on_nonfinite = check_choice(on_nonfinite, "on_nonfinite", _POLICIES, name)
        self.reference = bool(reference)
        self._state = {}  # name -> tensor, created on the grads' device at the first step
        self._feed = None  # what an attached optimizer's next step applies (_optimizer_feed.FeedSource)
        self._rows = None  # (state rows, the same as a device tensor) of the last step
        self._shard_cache = DTensorShardCache()  # DTensor grads: split (and held) once while they live

    # -- the step -------------------------------------------------------------------------

    @torch.no_grad()
    def step(self) -> ClipResult:
        """Clips the parameters' grads in place and returns a :class:`ClipResult` (device tensors).

        No host sync, except with ``on_nonfinite="error"``, which reads the norm to raise.
        """
        if self.grad_attr != "grad":
            return self._step()
        # A grad the op refuses (sparse, say) is named: parameters[i].grad.
        return checked(self._step, items=self._params, arg="parameters", grads=True)

    def _step(self):
        """The pipeline every clipper runs: read the grads (:meth:`_read_grads`), return at once
        when there is nothing to clip, move the state to the grads' device, run the clipper's own
        part (:meth:`_clip`), hand the outcome to an attached optimizer."""
        grads = self._read_grads()
        if grads is None:
            if self._feed is not None:
                self._feed.clear()
            return ClipResult(idle_result(self._params[0].device, self.idle_norm))
        self._move_state(grads.device)
        values, coef, threshold = self._clip(grads)
        if self._feed is not None and self.feeds_found_inf:
            self._feed.set(values[ResultSlot.GRAD_SCALE] if self._folded() else None, values[ResultSlot.FOUND_INF])
        return ClipResult(values, coef, threshold)

    def _read_grads(self) -> StepGrads | None:
        """This step's grads (:class:`StepGrads`), or None when there are none to clip (and this
        rank takes no part in a reduction across ranks). Every grad is read in C++ when each
        parameter has a plain one and the op takes a held list (:func:`fastclip._grads.grads_in_cpp`);
        else in Python, DTensors split by the clipper's :class:`~fastclip._grads.DTensorShardCache`."""
        if self.takes_held_lists and self._norm_params is None and self.grad_attr == "grad":
            held = grads_in_cpp(self._params)
            if held is not None:
                every = range(len(self._params))
                keys, order = self._keys(every, None, False)
                return StepGrads(every, held, None, every, held, keys, order, self._params[0].grad.device)
        present, grads = present_and_grads(self._params, self.grad_attr)
        norm_present, norm_grads = present, grads
        if self._norm_params is not None:
            norm_present, norm_grads = present_and_grads(self._norm_params, self.grad_attr)
        if not norm_grads and not (self._reduces and self.steps_without_grads):
            return None
        # DTensors: their local shards, scaled in place, and how their partials are reduced.
        shards = None
        if self._norm_params is None:
            grads, keys, shards = self._shard_cache.split(grads, "grads", self.takes_held_lists)
            norm_grads = grads
        else:
            grads, _ = split_dtensors(grads, "grads")
            norm_grads, keys = split_dtensors(norm_grads, "grads")
        keys, order = self._keys(norm_present, keys, self._norm_params is not None)
        device = norm_grads[0].device if norm_grads else self._params[0].device
        return StepGrads(present, grads, shards, norm_present, norm_grads, keys, order, device)

    def _clip(self, step: StepGrads) -> tuple:
        """The clipper's own part of a step: ``(result values, per-tensor coef or None, per-tensor
        threshold or None)``. Here, the clippers of a norm: the norms (unless the stats op takes
        them from the grads), the non-finite check, then ``_update``."""
        norms = None  # the op computes the norms of the grads it clips
        if not self._norms_in_op(step.keys):
            norms = self._norms(step.norm_grads, step.device, step.keys, step.order, step.shards)
            self._raise_if_nonfinite(norms[0])
        policy = self._op_policy()
        # Attached to an optimizer that applies the factor, the op leaves the grads alone (but for
        # zeroing them on a non-finite step under "zero").
        folded = self._folded()
        # A held list of shards is scaled by the scale op, by the factors the step wrote: the
        # stats op gets no grads (it would scale them by the same factors, the same way).
        scale_shards = step.shards is not None and not folded
        grads = [] if scale_shards else step.grads
        values, coef, threshold = self._update(grads, norms, step.present, step.device, policy, not folded)
        if scale_shards:
            factors = values[ResultSlot.COEF] if coef is None else coef
            ops.multi_tensor_scale_(step.shards, factors, policy == "zero")
        return values, coef, threshold

    def _op_policy(self):
        """The on_nonfinite policy the op runs: "error" is checked before it, then runs as "skip"."""
        return "skip" if self.on_nonfinite == "error" else self.on_nonfinite

    def _folded(self):
        """Whether an attached optimizer applies the step's factor (the op then leaves the grads)."""
        return self._feed is not None and self.folds_into_optimizer

    def _raise_if_nonfinite(self, total):
        """With ``on_nonfinite="error"``, raises before anything is touched if ``total`` (the total
        norm, a device tensor: read on the host, a sync) is NaN or inf."""
        if self.on_nonfinite == "error" and not bool(torch.isfinite(total)):
            raise RuntimeError(
                f"{type(self).__name__}: the total norm of the gradients is {float(total)}; "
                "statistics and grads were left untouched (on_nonfinite='error')"
            )

    def _norm_type(self):
        return 2.0

    def _norms_in_op(self, keys):
        """Whether the stats op computes the norms from the grads it clips (on CUDA in the same
        launch as the step and the scale): they are this rank's grads, the grads it scales, and
        nothing reads the norm before the step."""
        return not self._groups and keys is None and self._norm_params is None and self.on_nonfinite != "error"

    def _rows_tensor(self, rows, device):
        """The state rows ``rows`` (a range or a list) as an int64 device tensor, copied again
        only when they change (comparing two ranges costs nothing, whatever their length; see
        :func:`~fastclip.distributed.cached_index_tensor` inside a CUDA graph capture). The stats
        ops check rows on the CPU only (on CUDA it would take a sync), and two entries updating one
        row would race on the GPU: they are checked distinct here, once per change."""
        cached = None
        if (
            self._rows is not None
            and type(self._rows[0]) is type(rows)
            and self._rows[0] == rows
            and self._rows[1].device == device
        ):
            cached = self._rows[1]
        elif type(rows) is not range and len(set(rows)) != len(rows):
            raise RuntimeError(f"fastclip: {type(self).__name__}'s state rows must be distinct, got {list(rows)}")
        index, cache = cached_index_tensor(cached, rows, torch.device(device))
        if cache:
            self._rows = (rows, index)
        return index

    def _keys(self, present, dtensor_keys, norm):
        """``(keys, order)`` of the grads at ``present`` (a range when all are): how each one's
        partials are reduced (see :mod:`fastclip.distributed`), from the param groups' keys
        computed at construction (selected again only when the present grads change) and the
        DTensors' meshes. ``norm``: of ``norm_parameters``."""
        keys, order = (self._norm_group_keys, self._norm_key_order) if norm else (self._group_keys, self._key_order)
        if keys is not None and not (type(present) is range and len(present) == len(keys)):
            cached = self._present_keys[norm]
            if cached is None or cached[0] != present:
                cached = self._present_keys[norm] = (present, [keys[i] for i in present])
            keys = cached[1]
        return merge_keys(dtensor_keys, keys), order

    def _norms(self, grads, device, keys, order=(), shards=None):
        """(total, per-tensor norms or None): this rank's, or the whole model's with process_group,
        param groups' process groups or DTensor grads (``shards``: ``grads`` as a held list)."""
        if not self._groups and keys is None:
            return ops.multi_tensor_norm(grads, self._norm_type(), self.per_tensor)
        if self.per_tensor and not self._lists_checked:  # once: a length mismatch would garble the vector
            check_same_lists_per_key(len(grads), self._groups, keys, order, "grads")
            self._lists_checked = True
        return norms_across_ranks(
            grads,
            self._norm_type(),
            self._groups,
            keys,
            device=device,
            keep_per_tensor=self.per_tensor,
            order=order,
            held=shards,
        )

    # -- attach to an optimizer -----------------------------------------------------------

    def attach(self, optimizer: torch.optim.Optimizer) -> "Clipper":
        """Hands each step's coefficient to ``optimizer``.

        For torch's fused Adam/AdamW (``fused=True``) and other optimizers that read
        ``grad_scale``/``found_inf`` (``_step_supports_amp_scaling``), the next ``optimizer.step()``
        divides the grads by ``1/coef`` inside its own kernel, so the clipper does not write the
        grads at all: a step costs one read of the grads (the norm) instead of three passes
        (read, then read and write). ``.grad`` keeps the unclipped values. A non-finite step with
        ``on_nonfinite="skip"`` sets ``found_inf``, so the optimizer skips it. Composes with
        ``torch.amp.GradScaler`` (call ``scaler.unscale_(optimizer)`` before ``clipper.step()``):
        the scales multiply and a step is skipped if either asks. Per-tensor clippers (AdaGC,
        AutoClip with ``scope="tensor"``, AGC) and other optimizers keep scaling the grads
        themselves; for them ``attach`` only forwards ``found_inf``. Returns ``self``.
        A :class:`fastclip.StepSkipper` attached to the same optimizer composes with it (in either
        order): the step is skipped if either asks, and the optimizer's ``grad_scale`` and
        ``found_inf`` are as they were once the step is done.
        """
        if self._feed is not None:
            raise RuntimeError(f"{type(self).__name__} is already attached to an optimizer")
        if not getattr(optimizer, "_step_supports_amp_scaling", False):
            return self
        self._feed = _optimizer_feed.add_source(optimizer)
        return self

    def detach(self) -> None:
        """Undoes :meth:`attach`."""
        if self._feed is not None:
            self._feed.remove()
        self._feed = None

    # -- state ----------------------------------------------------------------------------

    def _move_state(self, device):
        for key, t in self._state.items():
            if t.device != device:
                self._state[key] = t.to(device)

    def _config(self):
        """Hyperparameters a checkpoint must agree with to be loaded."""
        return {}

    def state_dict(self) -> dict:
        """Statistics, counters and histories (per-tensor state is keyed by parameter position)."""
        return {
            "config": self._config(),
            "host": self._host_state(),
            "state": {k: t.detach().clone() for k, t in self._state.items()},
        }

    def _host_state(self):
        return {}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restores :meth:`state_dict`'s output; the tensors may come from any device."""
        name = type(self).__name__
        try:
            config, host, state = state_dict["config"], state_dict["host"], state_dict["state"]
        except (KeyError, TypeError):
            raise ValueError(f"{name}: state_dict must hold 'config', 'host' and 'state'") from None
        if config != self._config():
            raise ValueError(f"{name}: the checkpoint was saved with {config}, this clipper has {self._config()}")
        self._check_loaded_state(state)
        device = next(iter(self._state.values())).device if self._state else None
        self._state = {k: (t.to(device) if device is not None else t).clone() for k, t in state.items()}
        self._load_host_state(host)

    def _load_host_state(self, host):
        pass

    def _check_loaded_state(self, state):
        pass

    def reset(self) -> None:
        """Forgets every statistic and history: the next step is the first."""
        self._state = {}
        self._load_host_state({})
        if self._feed is not None:
            self._feed.clear()


class NormClip(Clipper):
    """A fixed threshold: the stateful form of :func:`fastclip.clip_grad_norm_`, so every clipper
    shares one interface (``step()``, ``attach``, non-finite policies). Factor as torch computes
    it: ``min(max_norm / (norm + 1e-6), 1)``."""

    def __init__(
        self, parameters: Params, max_norm: float, norm_type: float = 2.0, on_nonfinite: str = "skip", **options
    ):
        super().__init__(parameters, on_nonfinite, **options)
        self.max_norm = check_number(max_norm, "max_norm", "NormClip", low=0.0)
        self.norm_type = check_number(norm_type, "norm_type", "NormClip", low=0.0)

    def _norm_type(self):
        return self.norm_type

    def _config(self):
        return {"max_norm": self.max_norm, "norm_type": self.norm_type}

    def _update(self, grads, norms, present, device, policy, scale_grads):
        values = empty_result(device)
        _ops.normclip_update_(
            None if norms is None else norms[0], values, self.max_norm, self.norm_type, policy, grads, scale_grads
        )
        return values, None, None


Clipper.__doc__ = inspect.cleandoc(Clipper.__doc__) + _options_doc(Clipper)
