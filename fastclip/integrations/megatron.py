"""Megatron-core's gradient clipping, on fastclip's kernels.

``get_grad_norm_fp32`` and ``clip_grad_by_total_norm_fp32`` take Megatron-core's arguments
(``megatron/core/optimizer/clip_grads.py``) and compute the same thing: the norm of
``grads_for_norm`` reduced over the DTensor data-parallel group and then over
``grad_stats_parallel_group`` (None means the whole world, as in ``torch.distributed``), and the
scaling of every grad of ``parameters``. Differences: the norm comes back as a 0-d float32 device
tensor, so nothing syncs (``as_float=True`` returns Megatron's Python float, one sync); any
float dtype and device work (Megatron's asserts CUDA fp32); the coefficient is applied on the
device as ``min(max_norm / (norm + 1e-6), 1)`` in float32, where Megatron computes it in double
on the host and skips the pass when it is >= 1 (the results agree to float32 rounding).

Expert parallelism (MoE): Megatron-core keeps dense and expert parameters in different optimizers
of a ``ChainedOptimizer``, each with its own grad-stats group (dense: the model-parallel group,
or the distributed optimizer's; experts: the expert tensor x expert-parallel x pipeline group), and
combines their norms as ``sqrt(sum n_i^2)`` on the host. :func:`get_grad_norm` does the same on
the device, in one pass over every grad and one all-reduce per distinct group, through fastclip's
param groups (each sub-optimizer's grads a param group carrying its grad-stats group), and
:func:`param_groups` hands those groups to any fastclip clipper.

:func:`patch` swaps these into Megatron-core in place, or makes every Megatron optimizer clip
with a fastclip clipper (ZClip, AutoClip, NormClip...), with the statistics on the device and
agreeing on every rank. Megatron itself is not imported by this module until :func:`patch` runs.
"""

from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist

from .. import ops
from .._grads import present_and_grads
from .._types import Params, ProcessGroups, Tensors
from .._validation import flatten_groups
from ..distributed import as_groups, merge_keys, norms_across_ranks, param_group_keys, split_dtensors

__all__ = [
    "clip_grad_by_total_norm_fp32",
    "get_grad_norm",
    "get_grad_norm_fp32",
    "moe_param_groups",
    "norm_parameters",
    "param_groups",
    "patch",
    "unpatch",
]


def _stats_groups(grad_stats_parallel_group):
    if grad_stats_parallel_group is None:
        return (dist.group.WORLD,) if dist.is_available() and dist.is_initialized() else ()
    return as_groups(grad_stats_parallel_group, "grad_stats_parallel_group")


def get_grad_norm_fp32(
    grads_for_norm: Tensors,
    norm_type: float = 2,
    grad_stats_parallel_group: ProcessGroups = None,
    *,
    as_float: bool = False,
) -> torch.Tensor | float:
    """The norm of ``grads_for_norm`` across the model-parallel (or distributed-optimizer) ranks.

    Every rank passes the grads it counts (shared and tensor-parallel-duplicate parameters
    excluded on all but one rank, as Megatron's ``get_main_grads_for_grad_norm`` does). DTensor
    grads are reduced over their sharded mesh dims first. Returns a 0-d float32 tensor on the
    grads' device (no sync), or a Python float with ``as_float=True`` (one sync, as Megatron).
    ``norm_type=0`` raises ValueError (Megatron-core's own function raises ZeroDivisionError).
    """
    grads = [grads_for_norm] if isinstance(grads_for_norm, torch.Tensor) else list(grads_for_norm)
    norm_type = float(norm_type)
    if norm_type == 0:  # Megatron-core's own function divides by it
        raise ValueError(
            "fastclip.integrations.megatron.get_grad_norm_fp32: norm_type must be > 0 or inf "
            "(Megatron-core's norm takes the 1/norm_type power), got 0"
        )
    groups = _stats_groups(grad_stats_parallel_group)
    total = _norm_of_groups([{"params": grads, "process_group": groups}], norm_type, "grads_for_norm")
    return float(total) if as_float else total


def _norm_of_groups(groups, norm_type=2.0, where="grads_for_norm"):
    """The norm (0-d float32) of param groups of grads, each reduced over its "process_group"
    (DTensors over their mesh's sharded dims first, then the group's, as Megatron does), the
    groups' partials combined in float64: Megatron's ``sqrt(sum n_i^2)`` over optimizers."""
    tensors, spans = flatten_groups(groups)
    keys, order = param_group_keys(len(tensors), spans)
    local, dtensor_keys = split_dtensors(tensors, where)
    keys = merge_keys(dtensor_keys, keys)
    empty_device = "cuda" if torch.cuda.is_available() else "cpu"  # for a rank with no grads
    total, _ = norms_across_ranks(
        local, norm_type, (), keys, device=empty_device, total_dtype=torch.float32, order=order
    )
    return total


def _grads_of(parameters, use_decoupled_grad):
    """The grads present (``.grad``, or ``.decoupled_grad``), detached; DTensors' local shards."""
    parameters = [parameters] if isinstance(parameters, torch.Tensor) else list(parameters)
    attr = "decoupled_grad" if use_decoupled_grad else "grad"
    _, grads = present_and_grads(parameters, attr)
    return split_dtensors([g.detach() for g in grads], attr)[0]


def clip_grad_by_total_norm_fp32(
    parameters: Tensors, max_norm: float, total_norm: torch.Tensor | float, use_decoupled_grad: bool = False
) -> None:
    """Scales the grads (``.grad``, or ``.decoupled_grad``) of every parameter by
    ``min(max_norm / (total_norm + 1e-6), 1)``, computed on the device; ``total_norm`` may be a
    float or a tensor (e.g. from :func:`get_grad_norm_fp32`)."""
    grads = _grads_of(parameters, use_decoupled_grad)
    if not grads:
        return
    device = grads[0].device
    if isinstance(total_norm, torch.Tensor):
        total = total_norm.to(device, non_blocking=True).float().reshape(())
    else:
        total = torch.full((), float(total_norm), dtype=torch.float32, device=device)
    ops.multi_tensor_clip_by_norm_(grads, total, float(max_norm))


# -- Megatron optimizers: dense and expert (ChainedOptimizer), separate grad-norm groups (MTP) -------


def _sub_optimizers(megatron_optimizer):
    """The optimizers whose parameters a Megatron optimizer holds: a ChainedOptimizer's chain
    (dense first, then experts, as Megatron builds it), or the optimizer itself."""
    chain = getattr(megatron_optimizer, "chained_optimizers", None)
    return list(chain) if chain is not None else [megatron_optimizer]


def _stats_groups_of(optimizer):
    return list(_stats_groups(optimizer.get_grad_stats_parallel_group()))


def _grads_for_main_norm(optimizer):
    """The grads Megatron counts in an optimizer's (main) norm, as the installed Megatron selects
    them: ``get_grads_for_grad_norm()`` where it exists (versions with separate grad-norm groups
    leave those out), else ``get_main_grads_for_grad_norm()``."""
    select = getattr(optimizer, "get_grads_for_grad_norm", None)
    return list(select()) if select is not None else list(optimizer.get_main_grads_for_grad_norm())


def _separate_group_names():
    """The grad-norm groups clipped on their own (``param.grad_norm_group``): Megatron-LM's
    registry where it has one, else ``("mtp",)`` (multi-token prediction)."""
    try:
        from megatron.core.optimizer.optimizer import SEPARATE_GRAD_NORM_GROUPS
    except ImportError:
        return ("mtp",)
    return tuple(SEPARATE_GRAD_NORM_GROUPS)


def _counted_grad_ids(optimizer, names):
    """ids of every grad Megatron counts in some norm of ``optimizer`` (shared parameters and
    tensor-parallel duplicates left out), whichever group the norm is."""
    ids = set()
    main = getattr(optimizer, "get_main_grads_for_grad_norm", None)
    if main is not None:
        ids.update(map(id, main()))
    select = getattr(optimizer, "get_grads_for_grad_norm", None)
    if select is not None:
        ids.update(map(id, select()))
        for name in names:
            ids.update(map(id, select(name)))
    return ids


def _tag(param, names):
    tag = getattr(param, "grad_norm_group", None)
    if tag is not None and tag not in names:
        raise ValueError(
            f"fastclip.integrations.megatron: a parameter has grad_norm_group={tag!r}; the separate "
            f"grad-norm groups are {names}"
        )
    return tag


def moe_param_groups(
    parameters: Params, dense_process_group: ProcessGroups, expert_process_group: ProcessGroups
) -> list[dict]:
    """Parameters split into fastclip param groups as Megatron-core splits them between its dense
    and expert optimizers: experts are the parameters with ``param.allreduce == False`` (how
    Megatron marks expert weights) or in a param group with ``"is_expert_parallel": True``
    (Megatron's optimizer param groups); the rest is dense. Returns ``[{"params": dense,
    "process_group": dense_process_group}, {"params": experts, "process_group":
    expert_process_group}]``, e.g. with the data-parallel (or distributed-optimizer) group for dense
    grads and ``[expert_parallel_group, expert_data_parallel_group]`` for expert grads sharded over
    both: ``fastclip.ZClip(moe_param_groups(model.parameters(), dp, [ep, edp]))``."""
    entries = [parameters] if isinstance(parameters, torch.Tensor) else list(parameters)
    dense, experts = [], []
    for entry in entries:
        if isinstance(entry, dict):
            tensors, _ = flatten_groups([entry])
            if entry.get("is_expert_parallel", False):
                experts += tensors
                continue
        else:
            tensors = [entry]
        for p in tensors:
            (experts if getattr(p, "allreduce", True) is False else dense).append(p)
    return [
        {"params": dense, "process_group": dense_process_group},
        {"params": experts, "process_group": expert_process_group},
    ]


def param_groups(megatron_optimizer: Any, grad_norm_group: str | None = None) -> list[dict]:
    """fastclip param groups for a Megatron optimizer: one per optimizer (a ``ChainedOptimizer``'s
    dense and expert optimizers alike), ``{"params": its parameters, "process_group": its
    grad-stats groups}`` (Megatron's None group is the whole world), so that any fastclip clipper
    or ``fastclip.clip_grad_norm_`` reduces each optimizer's grads over its own groups and takes
    one total norm, one coefficient for all. ``grad_norm_group=None``: the parameters of no
    separate grad-norm group; ``"mtp"``: those tagged ``param.grad_norm_group = "mtp"``.
    Pair them with :func:`norm_parameters` (Megatron's selection of the grads counted in the norm):
    ``fastclip.ZClip(param_groups(opt), norm_parameters=norm_parameters(opt))``. Call it once the
    grads exist (after a first backward), as :func:`norm_parameters` reads them.
    """
    names = _separate_group_names()
    return [
        {
            "params": [p for p in opt.get_parameters() if _tag(p, names) == grad_norm_group],
            "process_group": _stats_groups_of(opt),
        }
        for opt in _sub_optimizers(megatron_optimizer)
    ]


def norm_parameters(megatron_optimizer: Any, grad_norm_group: str | None = None) -> list:
    """The parameters of :func:`param_groups` whose grads Megatron counts in the norm: those whose
    current grad is among Megatron's selection (shared parameters and tensor-parallel duplicates
    left out). Reads the grads: call it after a backward."""
    names = _separate_group_names()
    out = []
    for opt in _sub_optimizers(megatron_optimizer):
        counted = _counted_grad_ids(opt, names)
        out += [
            p
            for p in opt.get_parameters()
            if _tag(p, names) == grad_norm_group and id(getattr(p, "grad", None)) in counted
        ]
    return out


def get_grad_norm(megatron_optimizer: Any, *, as_float: bool = False) -> torch.Tensor | float:
    """The grad norm Megatron's ``get_grad_norm`` computes for ``megatron_optimizer`` (a
    ``ChainedOptimizer`` or a single optimizer), on the device: each optimizer's grads (Megatron's
    own selection) reduced over its grad-stats group, combined as ``sqrt(sum n_i^2)`` in float64
    (Megatron combines the floats of one all-reduce per optimizer on the host, a sync each). One
    norm pass over every grad, one all-reduce per distinct group. Returns a 0-d float32 tensor
    (no sync), or a float with ``as_float=True``."""
    total = _norm_of_groups(
        [
            {"params": _grads_for_main_norm(opt), "process_group": _stats_groups_of(opt)}
            for opt in _sub_optimizers(megatron_optimizer)
        ]
    )
    return float(total) if as_float else total


class _Clipping:
    """What ``patch(clipper=...)`` keeps per Megatron optimizer, built at its first clip: one
    clipper for the parameters of every optimizer in it (dense and experts, each reduced over its
    own grad-stats group, one coefficient for all), and for each separate grad-norm group present
    on some rank (MTP), its parameters and counted ones, clipped by their own norm."""

    def __init__(self, owner, make_clipper):
        optimizers = _sub_optimizers(owner)
        names = _separate_group_names()
        groups, counted_params = [], []
        separate = {name: ([], []) for name in names}  # name -> (norm groups of params, params scaled)
        stats_groups = []
        for opt in optimizers:
            stats = _stats_groups_of(opt)
            stats_groups += [g for g in stats if not any(g is h for h in stats_groups)]
            counted = _counted_grad_ids(opt, names)
            tagged = {name: [] for name in names}
            mine = []
            for p in opt.get_parameters():
                tag = _tag(p, names)
                (mine if tag is None else tagged[tag]).append(p)
            groups.append({"params": mine, "process_group": stats})
            counted_params += [p for p in mine if id(getattr(p, "grad", None)) in counted]
            for name, params in tagged.items():
                separate[name][0].append(
                    {"params": [p for p in params if id(getattr(p, "grad", None)) in counted], "process_group": stats}
                )
                separate[name][1].extend(params)
        if len(optimizers) == 1:  # one optimizer: its parameters and its group, as before
            self.clipper = make_clipper(groups[0]["params"], counted_params, groups[0]["process_group"])
        else:  # each optimizer's parameters a param group carrying its grad-stats groups
            self.clipper = make_clipper(groups, counted_params, None)
        present = _present_anywhere([bool(separate[name][1]) for name in names], stats_groups)
        self.separate = {name: separate[name] for name, here in zip(names, present) if here}

    def run(self, owner, clip_grad, sync_free):
        result = self.clipper.step()
        by_group = {}
        for name, (norm_groups, params) in self.separate.items():  # Megatron: their own norm, clipped at clip_grad
            grads = [
                {"params": [p.grad for p in g["params"] if p.grad is not None], "process_group": g["process_group"]}
                for g in norm_groups
            ]
            norm = _norm_of_groups(grads)
            clip_grad_by_total_norm_fp32(params, clip_grad, norm)
            by_group[name] = norm if sync_free else float(norm)
        owner.grad_norms_by_group = by_group
        return result.norm if sync_free else float(result.norm)


def _present_anywhere(flags, groups):
    """Whether each flag is set on some rank of ``groups`` (reduced in turn): one small all-reduce
    per group and one host read, once (Megatron's ``has_grad_norm_group``)."""
    if not any(flags) and not groups:
        return flags
    probe = torch.tensor([int(f) for f in flags] or [0], dtype=torch.int64)
    for group in groups:
        if dist.get_backend(group) == "nccl":
            probe = probe.cuda()
        dist.all_reduce(probe, op=dist.ReduceOp.MAX, group=group)
    return [bool(v) for v in probe.tolist()][: len(flags)]


_PATCHED = {}


def _megatron_modules():
    import importlib

    names = [
        "megatron.core.optimizer.clip_grads",
        "megatron.core.optimizer.optimizer",
        "megatron.core.optimizer.layer_wise_optimizer",
    ]
    modules = []
    for name in names:
        try:
            modules.append(importlib.import_module(name))
        except ImportError:
            if not modules:
                raise
    return modules


def patch(clipper: Callable | None = None, *, sync_free: bool = False) -> list:
    """Makes Megatron-core clip with fastclip, in place, for every optimizer it builds.

    ``clipper=None``: the fixed threshold stays Megatron's (``--clip-grad``); its
    ``get_grad_norm_fp32`` and ``clip_grad_by_total_norm_fp32`` become this module's, and
    ``ChainedOptimizer.get_grad_norm`` (dense and expert optimizers with different grad-stats
    groups) becomes :func:`get_grad_norm`, combined on the device. With ``sync_free=False`` (the
    default) the norm is still returned as a float, as Megatron's callers expect (one sync, like
    Megatron); ``sync_free=True`` hands them the device tensor. Megatron's own ``step`` runs as
    it is.

    ``clipper``: a function ``(parameters, norm_parameters, process_group) -> fastclip clipper``,
    e.g. ``lambda params, norm_params, group: fastclip.ZClip(params, norm_parameters=norm_params,
    process_group=group)``. Each Megatron optimizer then builds one clipper (lazily, at its first
    clip) and its step runs it where Megatron would clip (``clip_grad > 0``): the norm over
    Megatron's set of grads, reduced over the grad-stats groups, every grad scaled, the same
    statistics on every rank. A ``ChainedOptimizer`` (Megatron-core's MoE layout: dense and expert
    optimizers) builds one clipper for all of them: ``parameters`` is then a list of param
    groups, one per optimizer, each carrying its optimizer's grad-stats groups as
    ``"process_group"`` (and ``process_group`` is None), so dense and expert grads are each
    reduced over their own groups and one coefficient scales them all; fastclip runs the chain's
    ``step`` (Megatron-core 0.16's: ``prepare_grads``, the clip, ``count_zeros`` if logged,
    ``step_with_ready_grads``). Parameters tagged ``param.grad_norm_group = "mtp"`` (multi-token
    prediction, Megatron-LM) are left out of the clipper: as in Megatron-LM, they get their own
    norm, clipped at Megatron's fixed ``clip_grad``, reported in ``optimizer.grad_norms_by_group``.
    The step returns the clipper's pre-clip norm (a float unless ``sync_free``).

    Returns the patched modules; :func:`unpatch` restores Megatron. Megatron must be importable.
    """
    modules = _megatron_modules()
    optimizer = next(m for m in modules if hasattr(m, "MegatronOptimizer"))
    if _PATCHED:
        unpatch()

    def norm(grads_for_norm, norm_type=2, grad_stats_parallel_group=None):
        return get_grad_norm_fp32(grads_for_norm, norm_type, grad_stats_parallel_group, as_float=not sync_free)

    for module in modules:
        for name, new in (("get_grad_norm_fp32", norm), ("clip_grad_by_total_norm_fp32", clip_grad_by_total_norm_fp32)):
            if hasattr(module, name):
                _PATCHED[(module, name)] = getattr(module, name)
                setattr(module, name, new)
    chained = getattr(optimizer, "ChainedOptimizer", None)

    def chained_get_grad_norm(self):
        return get_grad_norm(self, as_float=not sync_free)

    if chained is not None:
        _PATCHED[(chained, "get_grad_norm")] = chained.__dict__.get("get_grad_norm", _ABSENT)
        chained.get_grad_norm = chained_get_grad_norm
    if clipper is None:
        return modules

    def clipping(self):
        made = self.__dict__.get("_fastclip_clipping")
        if made is None:
            if any(
                getattr(getattr(opt, "config", None), "use_precision_aware_optimizer_no_fp8_or_ds_fp8", False)
                for opt in _sub_optimizers(self)
            ):
                raise NotImplementedError(
                    "fastclip's adaptive Megatron patch reads .grad; decoupled grads "
                    "(precision-aware optimizer) are not supported yet"
                )
            made = self._fastclip_clipping = _Clipping(self, clipper)
            self._fastclip_clipper = made.clipper
        return made

    cls = optimizer.MegatronOptimizer
    _PATCHED[(cls, "clip_grad_norm")] = cls.__dict__.get("clip_grad_norm", _ABSENT)

    def clip_grad_norm(self, clip_grad):
        return clipping(self).run(self, clip_grad, sync_free)

    cls.clip_grad_norm = clip_grad_norm
    if chained is not None:
        original_step = chained.step
        _PATCHED[(chained, "step")] = chained.__dict__.get("step", _ABSENT)

        @torch.no_grad()
        def chained_step(self):
            optimizers = self.chained_optimizers
            if not optimizers:  # nothing to clip (a rank without trainable parameters): Megatron's own
                return original_step(self)
            if self.prepare_grads():
                return False, None, None
            clip_grads = [opt.config.clip_grad for opt in optimizers if not getattr(opt, "is_stub_optimizer", False)]
            if any(c > 0.0 for c in clip_grads):  # (Megatron asserts one config for the whole chain)
                grad_norm = clipping(self).run(self, max(clip_grads), sync_free)
            else:  # Megatron computes the norm (for logging) but clips nothing
                grad_norm = self.get_grad_norm()
            num_zeros_in_grad = self.count_zeros() if self.config.log_num_zeros_in_grad else None
            return self.step_with_ready_grads(), grad_norm, num_zeros_in_grad

        chained.step = chained_step
    return modules


_ABSENT = object()  # a method the class inherited (unpatch deletes the override instead of restoring one)


def unpatch() -> None:
    """Restores what :func:`patch` replaced."""
    for (owner, name), original in _PATCHED.items():
        if original is _ABSENT:
            delattr(owner, name)
        else:
            setattr(owner, name, original)
    _PATCHED.clear()
