// How a fastclip op is defined: csrc/ops/<op>.cpp holds its schema (with its contract), its
// held_<op> form and, for the list ops, that form's kernel, in one TORCH_LIBRARY_FRAGMENT. The
// backends register their kernels in csrc/cpu/<op>.cpp and csrc/cuda/<op>.cpp; the fakes that
// torch.compile traces with are in fastclip/_ops.py. Every op is defined through define_op, so
// none can miss fastclip's answer to sparse tensors.
#pragma once

#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/library.h>

#include <string>

#include "held_list.h"

// The clippers' steps (zclip_update_, normclip_update_, autoclip_update_, adagc_update_) share
// one contract (common/layouts.h has the state and result layouts). Each takes the grads it clips
// and, optionally, their norms: given (reduced across ranks), the step reads them; None, the op
// computes the L2 norm of the grads itself (on CUDA the norm, the step and the scale are one
// cooperative launch). The step updates the state in place and writes `result` (float32,
// layouts.h's result slots) plus, for the per-tensor forms, one factor and one threshold per
// entry. Then, with scale_grads, the grads are scaled by the step's factor (one, or one per grad),
// a factor of 0 storing zeros under on_nonfinite="zero"; without it (an attached optimizer applies
// the factor) they are left alone, except that "zero" zeroes them on a non-finite step. No host
// sync. Each has a held_<op> form taking the grads as a TensorList.

namespace fastclip {

using Held = c10::intrusive_ptr<HeldList>;

// Defines `schema` and answers sparse tensors with a clear error naming the op, instead of the
// dispatcher's "could not run ... with arguments from the 'SparseCPU' backend".
void define_op(torch::Library& m, const std::string& schema);

// Also defines held_<op>: the same op with its first argument, a list of tensors, taken as a
// TensorList held across calls (held_list.h), whose kernel runs <op> on the held tensors below
// autograd, passing them as the op's list (boxed).
void define_op_with_held(torch::Library& m, const std::string& schema);

// Defines held_<op> for the op of `schema` (already defined), run by `held_kernel`.
void define_held_form(torch::Library& m, const std::string& schema, torch::CppFunction held_kernel);

// The held kernels call their op below autograd: these ops take no part in autograd (their tensors
// are grads), and the autograd fallback would box the list, one reference per tensor.
struct BelowAutograd {
  c10::impl::ExcludeDispatchKeyGuard guard{c10::autograd_dispatch_keyset_with_ADInplaceOrView};
};

// The held_<op> kernel of a list op `Ret op(TensorList, Args...)`: the op called, typed, on the
// held vector (no per-tensor reference taken, as the boxed form would). `op` must be defined.
template <typename Signature>
struct HeldListKernel;
template <typename Ret, typename... Args>
struct HeldListKernel<Ret(Args...)> {
  static torch::CppFunction make(const std::string& op) {
    const auto typed =
        c10::Dispatcher::singleton().findSchemaOrThrow(op.c_str(), "").typed<Ret(at::TensorList, Args...)>();
    return torch::CppFunction([typed](const Held& list, Args... args) -> Ret {
      const BelowAutograd below_autograd;
      return typed.call(list->tensors, args...);
    });
  }
};

// define_op_with_held for a list op of signature Ret(TensorList, Args...), given as Ret(Args...).
template <typename Signature>
void define_list_op_with_held(torch::Library& m, const std::string& schema) {
  define_op(m, schema);
  define_held_form(m, schema, HeldListKernel<Signature>::make("fastclip::" + schema.substr(0, schema.find('('))));
}

}  // namespace fastclip
