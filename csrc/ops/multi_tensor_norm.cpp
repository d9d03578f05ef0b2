// multi_tensor_norm: returns (total, per_tensor): the p-norm of all elements of all tensors (torch's
// norm of the per-tensor norms) and, when per_tensor is true, each tensor's norm (else an empty
// tensor). Accumulation is float32 (float64 if any input is float64); the total is returned in
// the promoted dtype of the inputs, as torch returns it, and per-tensor norms in the accumulation
// dtype.
#include "op_library.h"

namespace fastclip {
namespace {

std::tuple<at::Tensor, at::Tensor> held_multi_tensor_norm(const Held& list, double norm_type, bool per_tensor) {
  static const auto op =
      typed_op<std::tuple<at::Tensor, at::Tensor>(at::TensorList, double, bool)>("multi_tensor_norm");
  const BelowAutograd below_autograd;
  return op.call(list->tensors, norm_type, per_tensor);
}

}  // namespace
}  // namespace fastclip

TORCH_LIBRARY_FRAGMENT(fastclip, m) {
  fastclip::define_op_with_held(
      m, "multi_tensor_norm(Tensor[] tensors, float norm_type, bool per_tensor) -> (Tensor, Tensor)",
      torch::CppFunction(TORCH_FN(fastclip::held_multi_tensor_norm)));
}
