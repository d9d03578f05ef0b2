// The held_<op> ops: the list ops and the clippers' stats ops on a HeldList (held_list.h),
// called through the dispatcher on the held vector, so whichever backend registered the op (CPU,
// CUDA, the CUDA kernels on the CPU) runs it. Below autograd: these ops take no part in autograd
// (their tensors are grads), and the autograd fallback would box the list, one reference per
// tensor.
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/library.h>

#include <memory>
#include <string>
#include <tuple>

#include "held_list.h"

namespace fastclip {
namespace {

using Held = c10::intrusive_ptr<HeldList>;

template <typename Signature>
c10::TypedOperatorHandle<Signature> list_op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Signature>();
}

std::tuple<at::Tensor, at::Tensor> held_norm(const Held& list, double norm_type, bool per_tensor) {
  static const auto op =
      list_op<std::tuple<at::Tensor, at::Tensor>(at::TensorList, double, bool)>("fastclip::multi_tensor_norm");
  c10::impl::ExcludeDispatchKeyGuard below_autograd(c10::autograd_dispatch_keyset_with_ADInplaceOrView);
  return op.call(list->tensors, norm_type, per_tensor);
}

void held_scale(const Held& list, const at::Tensor& scale, bool clear_on_zero) {
  static const auto op = list_op<void(at::TensorList, const at::Tensor&, bool)>("fastclip::multi_tensor_scale_");
  c10::impl::ExcludeDispatchKeyGuard below_autograd(c10::autograd_dispatch_keyset_with_ADInplaceOrView);
  op.call(list->tensors, scale, clear_on_zero);
}

at::Tensor held_clip_grad_norm(const Held& list, double max_norm, double norm_type) {
  static const auto op = list_op<at::Tensor(at::TensorList, double, double)>("fastclip::multi_tensor_clip_grad_norm_");
  c10::impl::ExcludeDispatchKeyGuard below_autograd(c10::autograd_dispatch_keyset_with_ADInplaceOrView);
  return op.call(list->tensors, max_norm, norm_type);
}

void held_clip_by_norm(const Held& list, const at::Tensor& total_norm, double max_norm) {
  static const auto op =
      list_op<void(at::TensorList, const at::Tensor&, double)>("fastclip::multi_tensor_clip_by_norm_");
  c10::impl::ExcludeDispatchKeyGuard below_autograd(c10::autograd_dispatch_keyset_with_ADInplaceOrView);
  op.call(list->tensors, total_norm, max_norm);
}

// A stats op's held_<op> form (fastclip.cpp's def_with_held): <op> run with its first argument,
// the held grads, replaced by their tensors, below autograd, on the same stack.
class RunOnHeldGrads final : public c10::OperatorKernel {
 public:
  explicit RunOnHeldGrads(const char* op) : op_name_(std::string("fastclip::") + op) {}

  void operator()(const c10::OperatorHandle& held_op, c10::DispatchKeySet, torch::jit::Stack* stack) const {
    // Looked up at each call (a hash lookup): at registration the op may not be defined yet.
    const c10::OperatorHandle op = c10::Dispatcher::singleton().findSchemaOrThrow(op_name_.c_str(), "");
    c10::IValue& grads = (*stack)[stack->size() - held_op.schema().arguments().size()];
    grads = c10::IValue(c10::List<at::Tensor>(grads.toCustomClass<HeldList>()->tensors));
    c10::impl::ExcludeDispatchKeyGuard below_autograd(c10::autograd_dispatch_keyset_with_ADInplaceOrView);
    op.callBoxed(stack);
  }

 private:
  std::string op_name_;
};

}  // namespace

}  // namespace fastclip

TORCH_LIBRARY_IMPL(fastclip, CompositeImplicitAutograd, m) {
  m.impl("held_multi_tensor_norm", &fastclip::held_norm);
  m.impl("held_multi_tensor_scale_", &fastclip::held_scale);
  m.impl("held_multi_tensor_clip_by_norm_", &fastclip::held_clip_by_norm);
  m.impl("held_multi_tensor_clip_grad_norm_", &fastclip::held_clip_grad_norm);
  for (const char* op : {"zclip_update_", "normclip_update_", "autoclip_update_", "adagc_update_"}) {
    m.impl((std::string("held_") + op).c_str(),
           torch::CppFunction::makeFromBoxedFunctor(std::make_unique<fastclip::RunOnHeldGrads>(op)));
  }
}
