"""Type aliases of fastclip's public signatures."""

from collections.abc import Iterable, Sequence
from typing import Any, Union

import torch

#: A tensor or an iterable of tensors, as torch's clipping functions take (``_tensor_or_tensors``).
Tensors = torch.Tensor | Iterable[torch.Tensor]

#: What a clipper is built from: parameters, or param groups (dicts with a ``"params"`` key).
Params = torch.Tensor | Iterable[torch.Tensor] | Iterable[dict[str, Any]]

#: ``process_group`` as fastclip takes it: None (this rank alone), a group, or groups reduced in turn.
ProcessGroups = Union["torch.distributed.ProcessGroup", Sequence["torch.distributed.ProcessGroup"], None]
