// multi_tensor_clip_grad_norm_: multi_tensor_norm and multi_tensor_clip_by_norm_ in one call
// (clip_grad_norm_): returns the pre-clip total norm in the promoted dtype and scales the tensors
// in place by torch's coefficient computed from it.
#include "op_library.h"

namespace fastclip {
namespace {

at::Tensor held_multi_tensor_clip_grad_norm(const Held& list, double max_norm, double norm_type) {
  static const auto op = typed_op<at::Tensor(at::TensorList, double, double)>("multi_tensor_clip_grad_norm_");
  const BelowAutograd below_autograd;
  return op.call(list->tensors, max_norm, norm_type);
}

}  // namespace
}  // namespace fastclip

TORCH_LIBRARY_FRAGMENT(fastclip, m) {
  fastclip::define_op_with_held(
      m, "multi_tensor_clip_grad_norm_(Tensor(a!)[] tensors, float max_norm, float norm_type) -> Tensor",
      torch::CppFunction(TORCH_FN(fastclip::held_multi_tensor_clip_grad_norm)));
}
