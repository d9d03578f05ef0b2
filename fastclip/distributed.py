"""Norms across ranks: each rank holds part of the gradients (shards of tensors, or whole tensors),
computes its local partial in one pass, and one all-reduce per process group combines them, so
every rank gets the norm of the whole model and applies the same coefficient.

``process_group`` everywhere in fastclip is None (this rank alone), a group, or a list of groups
reduced in turn (Megatron reduces over the data-parallel group, then the model-parallel one).
The collectives run on the current stream: nothing syncs the host.
"""

import math

import torch
import torch.distributed as dist

__all__ = ["as_groups", "reduce_norms"]


def as_groups(process_group, where="process_group"):
    """``process_group`` as a tuple of groups (empty for None), checked."""
    if process_group is None:
        return ()
    groups = tuple(process_group) if isinstance(process_group, (list, tuple)) else (process_group,)
    if groups and not dist.is_initialized():
        raise RuntimeError(f"fastclip: {where} was given but torch.distributed is not initialized")
    for i, g in enumerate(groups):
        if not isinstance(g, dist.ProcessGroup):
            raise TypeError(f"fastclip: {where}[{i}] is a {type(g).__name__}, not a torch.distributed.ProcessGroup")
    return groups


def _check_norm_type(norm_type):
    if norm_type == 0:
        raise ValueError("fastclip: norm_type=0 (the count of nonzero tensors) cannot be combined across ranks: "
                         "a sharded tensor would be counted once per rank")


def reduce_norms(per_tensor, norm_type, groups, total_dtype, keep_per_tensor=False):
    """The norms of the whole model from this rank's per-tensor norms.

    ``per_tensor``: this rank's norm of each of its tensors (the ``per_tensor`` output of
    ``multi_tensor_norm``). Sums of ``|g|^p`` (max of ``|g|`` for inf) are combined in float64: one
    scalar per group, or, with ``keep_per_tensor``, one vector holding every tensor's partial
    (every rank must then list the same tensors in the same order, each holding its shard).
    Returns ``(total in total_dtype, per-tensor norms or None)``.
    """
    _check_norm_type(norm_type)
    infinite = math.isinf(norm_type)
    op = dist.ReduceOp.MAX if infinite else dist.ReduceOp.SUM
    partial = per_tensor.double() if infinite else per_tensor.double().pow(norm_type)
    if not keep_per_tensor:
        partial = partial.max() if infinite else partial.sum()
        partial = partial.reshape(1)
        if per_tensor.numel() == 0:
            partial = torch.zeros(1, dtype=torch.float64, device=per_tensor.device)
    for group in groups:
        dist.all_reduce(partial, op=op, group=group)
    if infinite:
        total = partial.max() if partial.numel() else partial.new_zeros(())
        full = partial
    else:
        total = partial.sum().pow(1.0 / norm_type)
        full = partial.pow(1.0 / norm_type)
    return total.to(total_dtype).reshape(()), (full.to(per_tensor.dtype) if keep_per_tensor else None)


def check_same_lists(count, groups, what):
    """Raises on every rank if the ranks of any group hold lists of different lengths (one small
    all-reduce and one host read: call it once, not per step)."""
    probe = torch.tensor([count, -count], dtype=torch.int64)
    for group in groups:
        if dist.get_backend(group) == "nccl":
            probe = probe.cuda()
        dist.all_reduce(probe, op=dist.ReduceOp.MAX, group=group)
        high, low = int(probe[0]), -int(probe[1])
        if high != low:
            raise RuntimeError(f"fastclip: the ranks of a process group passed {what} of different lengths "
                               f"(between {low} and {high}); every rank must list the same tensors, each "
                               "holding its shard (possibly empty)")
        probe = torch.tensor([count, -count], dtype=torch.int64)
