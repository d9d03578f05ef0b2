// multi_tensor_clip_by_norm_: tensors *= min(max_norm / (total_norm + 1e-6), 1), torch's
// clip_grads_with_norm_, with the coefficient computed on the device from total_norm.
#include "op_library.h"

namespace fastclip {
namespace {

void held_multi_tensor_clip_by_norm(const Held& list, const at::Tensor& total_norm, double max_norm) {
  static const auto op = typed_op<void(at::TensorList, const at::Tensor&, double)>("multi_tensor_clip_by_norm_");
  const BelowAutograd below_autograd;
  op.call(list->tensors, total_norm, max_norm);
}

}  // namespace
}  // namespace fastclip

TORCH_LIBRARY_FRAGMENT(fastclip, m) {
  fastclip::define_op_with_held(
      m, "multi_tensor_clip_by_norm_(Tensor(a!)[] tensors, Tensor total_norm, float max_norm) -> ()",
      torch::CppFunction(TORCH_FN(fastclip::held_multi_tensor_clip_by_norm)));
}
