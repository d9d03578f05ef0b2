"""Norms across ranks: each rank holds part of the gradients (shards of tensors, or whole tensors),
computes its local partial in one pass, and one all-reduce per process group combines them, so
every rank gets the norm of the whole model and applies the same coefficient.

``process_group`` everywhere in fastclip is None (this rank alone), a group, or a list of groups
reduced in turn (Megatron reduces over the data-parallel group, then the model-parallel one).
The collectives run on the current stream: nothing syncs the host.

Parameters may come in param groups that carry their own ``"process_group"`` (expert parallelism:
dense and expert grads are reduced over different groups). Each tensor then has a key, the tuple
of groups its partial sums are reduced over (:func:`param_group_keys`, :func:`merge_keys`), and
the tensors of each key are reduced together over that key's groups, one all-reduce per group.
"""

import math
import operator
from collections.abc import Sequence

import torch
import torch.distributed as dist

from . import ops
from ._library import _C
from ._types import ProcessGroups
from ._validation import check_norm_type_across_ranks

__all__ = [
    "as_groups",
    "merge_keys",
    "norms_across_ranks",
    "param_group_keys",
    "reduce_norms",
    "reduce_per_tensor_",
    "split_dtensors",
]


def as_groups(process_group: ProcessGroups, where: str = "process_group") -> tuple:
    """``process_group`` as a tuple of groups (empty for None), checked."""
    if process_group is None:
        return ()
    listed = isinstance(process_group, (list, tuple))
    groups = tuple(process_group) if listed else (process_group,)
    if groups and not dist.is_initialized():
        raise RuntimeError(f"fastclip: {where} was given but torch.distributed is not initialized")
    for i, g in enumerate(groups):
        if not isinstance(g, dist.ProcessGroup):
            what = f"{where}[{i}]" if listed else where
            raise TypeError(
                f"fastclip: {what} is a {type(g).__name__}, not a torch.distributed.ProcessGroup "
                "(nor a list of them, nor None)"
            )
    return groups


def param_group_keys(count: int, spans: list, groups: tuple = ()) -> tuple[list | None, tuple]:
    """``(keys, order)`` for a list of ``count`` tensors flattened from param groups (``spans``:
    ``(group index, start, stop, group dict)`` per param group, as ``_validation.flatten_groups``
    makes them).

    A param group's ``"process_group"`` key, when present, replaces the call's ``groups`` for that
    group's tensors (None there: this rank's values are whole, nothing is reduced): ``keys[i]`` is
    then the tuple of groups (interned: equal keys are one object), and None for a tensor whose
    group has no such key (or a bare tensor), which is reduced over ``groups``. ``order`` lists
    every param group's key once, in the groups' order, empty groups included: the reductions
    follow it, so every rank that lists the same param groups runs the same collectives in the
    same order, whichever grads it holds. ``(None, ())`` when no group carries the key, or when
    nothing at all is reduced (every key empty and ``groups`` empty: the local path).
    """
    if not any("process_group" in entry for *_, entry in spans):
        return None, ()
    keys, order, pos = [None] * count, {}, 0
    for g, start, stop, entry in spans:
        if start > pos:  # bare tensors before this group
            order.setdefault(None)
        key = None
        if "process_group" in entry:
            key = _intern(as_groups(entry["process_group"], f"param group {g}'s process_group"))
            keys[start:stop] = [key] * (stop - start)
        order.setdefault(key)
        pos = stop
    if pos < count:
        order.setdefault(None)
    if not groups and not any(order):  # None and () alike: nothing is reduced anywhere
        return None, ()
    return keys, tuple(order)


def merge_keys(dtensor_keys: list | None, group_keys: list | None) -> list | None:
    """Per tensor, the groups its partials are reduced over: a DTensor's mesh groups (from
    :func:`split_dtensors`), then its param group's ``process_group`` (from :func:`param_group_keys`),
    a group listed in both counted once. None where neither applies (reduced over the call's
    ``process_group``)."""
    if dtensor_keys is None:
        return group_keys
    if group_keys is None:
        return dtensor_keys
    return list(map(_merged_key, dtensor_keys, group_keys))


_MERGED = {}


def _merged_key(dtensor_key, group_key):
    if group_key is None:
        return dtensor_key
    if dtensor_key is None:
        return group_key
    merged = _MERGED.get((dtensor_key, group_key))
    if merged is None:
        if len(_MERGED) >= _MAX_KEYS:
            _MERGED.clear()
        unique = {id(g): g for g in dtensor_key + group_key}  # a group reduced twice would count its ranks twice
        merged = _MERGED[(dtensor_key, group_key)] = _intern(tuple(unique.values()))
    return merged


def _intern(key: tuple) -> tuple:
    """``key``, or the equal key seen before (equal keys are one object, compared by identity in C)."""
    if len(_KEYS) >= _MAX_KEYS:
        _KEYS.clear()
    return _KEYS.setdefault(key, key)


def index_tensor(indices: Sequence[int], device: torch.device | str) -> torch.Tensor:
    """int64 indices on `device`, copied without blocking the host. On a GPU the copy is the ops'
    own metadata upload (``_C.index_tensor``), safe inside a CUDA graph capture: its pinned source
    is then kept for the life of the process, since the captured copy reads it at every replay."""
    device = torch.device(device)
    if device.type == "cuda" and hasattr(_C, "index_tensor"):
        return _C.index_tensor(indices, device.index if device.index is not None else torch.cuda.current_device())
    t = torch.tensor(indices, dtype=torch.int64)
    if device.type == "cuda":  # a build without the CUDA kernels: its ops refuse CUDA tensors anyway
        t = t.pin_memory()
    return t.to(device, non_blocking=True)


# Index tensors that a captured CUDA graph reads, by id: kept for the life of the process, as the
# graph may be replayed at any time and its lifetime is not ours to see.
_READ_BY_GRAPHS = {}


def cached_index_tensor(cached: torch.Tensor | None, indices: Sequence[int], device: torch.device):
    """``(index, cache)``: ``indices`` on ``device`` (:func:`index_tensor`) for a caller that keeps
    one made earlier, ``cached`` (None if it has none), and whether the caller may keep ``index``.
    Inside a CUDA graph capture a cached index is used and kept alive for the graph, and a missing
    one is made with the capture and not kept: its copy is captured, so it holds the indices only
    once the graph replays, and an eager call before that must not read it. So a first use inside
    a capture, without a warm-up, is safe."""
    if device.type == "cuda" and torch.cuda.is_current_stream_capturing():
        if cached is None:
            return index_tensor(indices, device), False
        _READ_BY_GRAPHS.setdefault(id(cached), cached)
        return cached, False
    if cached is None:
        return index_tensor(indices, device), True
    return cached, False


def _dtensor_type():
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # a torch built without distributed
        return None
    return DTensor


def split_dtensors(tensors: list[torch.Tensor], where: str = "tensors") -> tuple[list[torch.Tensor], list | None]:
    """(local tensors, keys): DTensors (FSDP2, tensor parallel) are replaced by their local shards,
    and keys[i] names the process groups over which tensor i's partial sums are reduced: the
    mesh dims on which it is sharded (a replicated dim holds the same values on every rank, so it
    counts once). keys[i] is None for a plain tensor (reduced over ``process_group``), and the
    keys are None altogether when the list holds no DTensor."""
    return split_dtensors_and_kind(tensors, where)[:2]


def split_dtensors_and_kind(tensors: list[torch.Tensor], where: str = "tensors") -> tuple[list, list | None, bool]:
    """:func:`split_dtensors`, and whether every tensor was a DTensor (for
    :class:`fastclip._grads.DTensorShardCache`, which keeps only lists of DTensors alone)."""
    dtensor = _dtensor_type()
    # The types present, collected in C (a per-tensor isinstance would cost as much as the clip).
    kinds = set(map(type, tensors))
    if dtensor is None or not any(issubclass(kind, dtensor) for kind in kinds):
        return tensors, None, False
    only_dtensors = kinds == {dtensor}
    if only_dtensors:  # FSDP2: every grad a DTensor whose spec was seen before, all looked up in C
        keys = list(map(_KEYS_BY_SPEC_ID.get, map(id, map(_SPEC, tensors))))
        if None not in keys:
            return list(map(_LOCAL_TENSOR, tensors)), keys, True
    local, keys = [], []
    for i, t in enumerate(tensors):
        if not isinstance(t, dtensor):
            local.append(t)
            keys.append(None)
            continue
        spec = t._spec
        local.append(t._local_tensor)
        key = _KEYS_BY_SPEC_ID.get(id(spec))
        keys.append(key if key is not None else _key_of_spec(spec, where, i))
    return local, keys, only_dtensors


# id(spec) -> key. A DTensor's spec (mesh and placements) is shared step after step: FSDP2 keeps one
# per parameter for its grads. Looking a key up by the spec's identity costs a fraction of hashing
# its placements, and far less than DeviceMesh.get_group. _SPECS_HELD keeps every cached spec
# alive, so its id cannot be reused by another object while the entry exists: an id found is that
# spec. Both are emptied when they grow past any model's parameter count. Equal keys are one
# object (_KEYS), so that grouping tensors by key hashes a handful of distinct tuples.
_KEYS_BY_SPEC_ID = {}
_SPECS_HELD = []
_KEYS = {}
_MAX_KEYS = 1 << 18
_SPEC, _LOCAL_TENSOR = operator.attrgetter("_spec"), operator.attrgetter("_local_tensor")


def _key_of_spec(spec, where, i):
    placements = spec.placements
    if any(placement.is_partial() for placement in placements):
        raise RuntimeError(
            f"fastclip: {where}[{i}] is a DTensor with a Partial placement (pending "
            "reduction); redistribute it to Shard or Replicate first"
        )
    key = tuple(spec.mesh.get_group(d) for d, pl in enumerate(placements) if pl.is_shard())
    if len(_KEYS_BY_SPEC_ID) >= _MAX_KEYS:
        _KEYS_BY_SPEC_ID.clear()
        _SPECS_HELD.clear()
        _KEYS.clear()
    key = _intern(key)
    _SPECS_HELD.append(spec)
    _KEYS_BY_SPEC_ID[id(spec)] = key
    return key


# float64 holds norm ** p for every float32 norm (2^-149 to 2^128) while p <= 8; beyond that the
# partials are scaled by their maximum across the ranks first (one more all-reduce).
_LARGEST_UNSCALED_P = 8.0


def reduce_norms(
    per_tensor: torch.Tensor,
    norm_type: float,
    groups: tuple,
    total_dtype: torch.dtype,
    keep_per_tensor: bool = False,
    keys: list | None = None,
    order: tuple = (),
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The norms of the whole model from this rank's per-tensor norms.

    ``per_tensor``: this rank's norm of each of its tensors (the ``per_tensor`` output of
    ``multi_tensor_norm``). Sums of ``|g|^p`` (max of ``|g|`` for inf) are combined in float64:
    for the tensors of each key (see :func:`split_dtensors` and :func:`param_group_keys`; None
    uses ``groups``; ``order``: keys reduced even when no tensor here has them), one scalar
    all-reduce per group, or, with ``keep_per_tensor``, one vector holding each of those tensors'
    partials (every rank must then list the same tensors in the same order, each holding its
    shard). The keys' sums are added: the total is that of every key's tensors. For p > 8 the
    partials are first scaled by their maximum across the ranks (one more all-reduce), so that no
    ``|g|^p`` overflows or underflows float64.
    Returns ``(total in total_dtype, per-tensor norms or None)``.
    """
    check_norm_type_across_ranks(norm_type)
    infinite = math.isinf(norm_type)
    scaled = not infinite and norm_type > _LARGEST_UNSCALED_P
    op = dist.ReduceOp.MAX if infinite else dist.ReduceOp.SUM
    partial = per_tensor.double() if infinite or scaled else per_tensor.double().pow(norm_type)
    n = partial.numel()
    sums = []
    full = partial.clone() if keep_per_tensor else None
    for key_groups, indices, on_device in _grouping(n, groups, keys, order):
        index = _index_on(indices, on_device, partial.device) if len(indices) != n else None
        part = partial if index is None else partial.index_select(0, index)
        if scaled:
            part = _log_partials_across_ranks(part, norm_type, key_groups, keep_per_tensor)
        else:
            if not keep_per_tensor:
                part = (part.max() if infinite else part.sum()).reshape(1) if part.numel() else part.new_zeros(1)
            for group in key_groups:
                dist.all_reduce(part, op=op, group=group)
        if keep_per_tensor:
            if index is None:
                full = part
            else:
                full.index_copy_(0, index, part)
        else:
            sums.append(part)
    if keep_per_tensor:
        combined = full
    else:
        combined = torch.cat(sums)
    if infinite:
        total = combined.max() if combined.numel() else combined.new_zeros(())
        norms = full
    elif scaled:  # log partials: log(sum |g|^p)
        total = torch.logsumexp(combined, 0).div(norm_type).exp()
        norms = full.div(norm_type).exp() if keep_per_tensor else None
    else:
        total = combined.sum().pow(1.0 / norm_type)
        norms = full.pow(1.0 / norm_type) if keep_per_tensor else None
    return total.to(total_dtype).reshape(()), (norms.to(per_tensor.dtype) if keep_per_tensor else None)


# id(keys) -> (keys, n, groups, order, grouping): a clipper passes the same keys list step after
# step (computed once, see Clipper._keys), so its grouping and index tensors are made once. The
# entry holds the list, so its id cannot be reused while the entry exists.
_GROUPINGS = {}
_MAX_GROUPINGS = 64


def _grouping(n: int, groups: tuple, keys: list | None, order: tuple) -> list:
    """``[(groups, indices, {device: index tensor})]``: :func:`_indices_by_groups`, cached for a
    keys list seen before (the same object, with the same ``n``, ``groups`` and ``order``)."""
    if keys is None:
        return [(k, v, {}) for k, v in _indices_by_groups(n, groups, keys, order).items()]
    entry = _GROUPINGS.get(id(keys))
    if entry is not None and entry[0] is keys and entry[1] == n and entry[2] == groups and entry[3] == order:
        return entry[4]
    grouping = [(k, v, {}) for k, v in _indices_by_groups(n, groups, keys, order).items()]
    if len(_GROUPINGS) >= _MAX_GROUPINGS:
        _GROUPINGS.clear()
    _GROUPINGS[id(keys)] = (keys, n, groups, order, grouping)
    return grouping


def _index_on(indices, on_device, device):
    """``indices`` as an int64 tensor on ``device``, made once per device (``on_device`` caches it;
    see :func:`cached_index_tensor` inside a CUDA graph capture)."""
    device = torch.device(device)
    index, cache = cached_index_tensor(on_device.get(device), indices, device)
    if cache:
        on_device[device] = index
    return index


def _indices_by_groups(n: int, groups: tuple, keys: list | None, order: tuple = ()) -> dict:
    """{groups: the indices of the tensors reduced over them}: a None key's over ``groups``, the
    others' over their key's (:func:`split_dtensors`, :func:`param_group_keys`). Tensors reduced
    over the same groups travel together: first the keys of ``order`` (present even with no
    tensor), then the others in order of first appearance (the same on every rank, since the
    ranks list the same tensors)."""
    by_groups = {}
    for key in order:
        by_groups.setdefault(groups if key is None else key, [])
    # Most lists have a single key, one object (split_dtensors interns them): compared by identity in C.
    distinct = {None} if not keys else ({keys[0]} if keys.count(keys[0]) == n else set(keys))
    if len(distinct) <= 1:  # (none at all: a rank with no tensors still reduces over `groups`, or `order`'s)
        if n or not by_groups:
            key = next(iter(distinct), None)
            by_groups.setdefault(groups if key is None else key, []).extend(range(n))
    else:
        for i in range(n):
            key = groups if keys[i] is None else keys[i]
            by_groups.setdefault(key, []).append(i)
    return by_groups


def reduce_per_tensor_(
    values: torch.Tensor, op: dist.ReduceOp, groups: tuple, keys: list | None = None, order: tuple = ()
) -> None:
    """All-reduces ``values`` in place with ``op``, its last dimension holding one value per tensor
    of the list that ``keys`` describes (see :func:`split_dtensors` and :func:`param_group_keys`;
    None keys are reduced over ``groups``): each tensor's values over its own groups. Every rank
    must list the same tensors, each holding its shard. No host sync."""
    n = values.shape[-1]
    for key_groups, indices, on_device in _grouping(n, groups, keys, order):
        if not key_groups:
            continue
        if len(indices) == n:
            for group in key_groups:
                dist.all_reduce(values, op=op, group=group)
            continue
        index = _index_on(indices, on_device, values.device)
        part = values.index_select(-1, index)
        for group in key_groups:
            dist.all_reduce(part, op=op, group=group)
        values.index_copy_(-1, index, part)


def _log_partials_across_ranks(norms: torch.Tensor, norm_type: float, groups: tuple, per_tensor: bool) -> torch.Tensor:
    """log(sum over the ranks of norm ** p), per tensor or for all of ``norms`` together, from
    float64 norms: each scaled by the largest across the ranks, so every power is at most 1."""
    if per_tensor:
        peak = norms.clone()
    else:
        peak = (norms.max() if norms.numel() else norms.new_zeros(())).reshape(1)
    for group in groups:
        dist.all_reduce(peak, op=dist.ReduceOp.MAX, group=group)
    powers = torch.where(peak > 0, norms / peak, 0.0).pow(norm_type)
    if not per_tensor:
        powers = powers.sum().reshape(1)
    for group in groups:
        dist.all_reduce(powers, op=dist.ReduceOp.SUM, group=group)
    logs = peak.log().mul(norm_type) + powers.log()  # peak 0: -inf + -inf, no tensor counted
    return torch.where(peak.isinf(), peak, logs)


def norms_across_ranks(
    tensors: list[torch.Tensor],
    norm_type: float,
    groups: tuple,
    keys: list | None = None,
    *,
    device: torch.device | str,
    keep_per_tensor: bool = False,
    total_dtype: torch.dtype | None = None,
    with_local_dtype: bool = False,
    order: tuple = (),
    held: torch.ScriptObject | None = None,
) -> tuple:
    """The norms of the whole model from this rank's ``tensors`` (local tensors or shards, see
    :func:`split_dtensors` and :func:`param_group_keys` for ``keys`` and ``order``): their
    per-tensor norms in one pass, then :func:`reduce_norms` over ``groups``. A rank with no
    tensors still takes part in the all-reduce, with an empty partial on ``device`` (used for
    that alone). The total is in
    ``total_dtype`` (default: the tensors' promoted dtype, float32 for none). Returns
    ``(total, per-tensor norms or None)``, and that promoted dtype with ``with_local_dtype``.
    ``held``: ``tensors`` as a held list (:class:`fastclip._grads.DTensorShardCache`), passed to the op instead.
    """
    if tensors:
        local_total, per = ops.multi_tensor_norm(tensors if held is None else held, norm_type, True)
        dtype = local_total.dtype
    else:  # nothing here, but this rank still takes part in the all-reduce
        per, dtype = torch.zeros(0, dtype=torch.float32, device=device), torch.float32
    total, norms = reduce_norms(per, norm_type, groups, total_dtype or dtype, keep_per_tensor, keys, order)
    return (total, norms, dtype) if with_local_dtype else (total, norms)


def check_same_lists_per_key(count: int, groups: tuple, keys: list | None, order: tuple, what: str) -> None:
    """:func:`check_same_lists` for the tensors of each key (see :func:`reduce_norms`), over that
    key's groups, once, not per step. Every collective runs before anything is raised, and the
    outcome is then shared over every group involved, so that every rank raises, not only those
    whose groups hold the mismatch (the others would wait forever on them)."""
    if keys is None:
        check_same_lists(count, groups, what)
        return
    mismatch, involved = None, []
    for key_groups, indices in _indices_by_groups(count, groups, keys, order).items():
        for group in key_groups:
            involved += [] if any(group is g for g in involved) else [group]
            low, high = _counts_across(len(indices), group)
            if low != high and mismatch is None:
                mismatch = (low, high)
    found = torch.tensor([mismatch is not None], dtype=torch.int64)
    for group in involved:
        found = _on_backend(found, group)
        dist.all_reduce(found, op=dist.ReduceOp.MAX, group=group)
    if int(found[0]):
        where = f"between {mismatch[0]} and {mismatch[1]}" if mismatch else "on other ranks"
        raise RuntimeError(
            f"fastclip: the ranks of a process group passed {what} of different lengths ({where}); "
            "every rank must list the same param groups and tensors, each holding its shard "
            "(possibly empty)"
        )


def _on_backend(t, group):
    return t.cuda() if dist.get_backend(group) == "nccl" else t


def _counts_across(count, group):
    """(lowest, highest) of ``count`` over the ranks of ``group`` (one all-reduce, one host read)."""
    probe = _on_backend(torch.tensor([count, -count], dtype=torch.int64), group)
    dist.all_reduce(probe, op=dist.ReduceOp.MAX, group=group)
    return -int(probe[1]), int(probe[0])


def check_same_lists(count: int, groups: tuple, what: str) -> None:
    """Raises on every rank if the ranks of any group hold lists of different lengths (one small
    all-reduce and one host read: call it once, not per step)."""
    for group in groups:
        low, high = _counts_across(count, group)
        if high != low:
            raise RuntimeError(
                f"fastclip: the ranks of a process group passed {what} of different lengths "
                f"(between {low} and {high}); every rank must list the same tensors, each "
                "holding its shard (possibly empty)"
            )
