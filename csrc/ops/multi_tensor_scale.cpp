// multi_tensor_scale_: tensors[i] *= scale (0-d, or scale[i] when scale holds one value per
// tensor). A coefficient of exactly 1 writes nothing. With clear_on_zero, a factor of exactly 0
// stores zeros (NaN and inf included) instead of multiplying: the clippers' on_nonfinite="zero".
#include "op_library.h"

namespace fastclip {
namespace {

void held_multi_tensor_scale(const Held& list, const at::Tensor& scale, bool clear_on_zero) {
  static const auto op = typed_op<void(at::TensorList, const at::Tensor&, bool)>("multi_tensor_scale_");
  const BelowAutograd below_autograd;
  op.call(list->tensors, scale, clear_on_zero);
}

}  // namespace
}  // namespace fastclip

TORCH_LIBRARY_FRAGMENT(fastclip, m) {
  fastclip::define_op_with_held(
      m, "multi_tensor_scale_(Tensor(a!)[] tensors, Tensor scale, bool clear_on_zero=False) -> ()",
      torch::CppFunction(TORCH_FN(fastclip::held_multi_tensor_scale)));
}
