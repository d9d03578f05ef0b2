// multi_tensor_norm: returns (total, per_tensor): the p-norm of all elements of all tensors (torch's
// norm of the per-tensor norms) and, when per_tensor is true, each tensor's norm (else an empty
// tensor). Accumulation is float32 (float64 if any input is float64); the total is returned in
// the promoted dtype of the inputs, as torch returns it, and per-tensor norms in the accumulation
// dtype.
#include "op_library.h"

TORCH_LIBRARY_FRAGMENT(fastclip, m) {
  fastclip::define_list_op_with_held<std::tuple<at::Tensor, at::Tensor>(double, bool)>(
      m, "multi_tensor_norm(Tensor[] tensors, float norm_type, bool per_tensor) -> (Tensor, Tensor)");
}
