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
// TensorList held across calls (held_list.h). Its kernel runs <op> on the held tensors below
// autograd; `held_kernel` is a typed one (the list ops: no per-tensor reference taken), else a
// boxed one that passes the held tensors as the op's list.
void define_op_with_held(torch::Library& m, const std::string& schema);
void define_op_with_held(torch::Library& m, const std::string& schema, torch::CppFunction held_kernel);

// The typed handle of fastclip::<name>, for a held kernel to call.
template <typename Signature>
c10::TypedOperatorHandle<Signature> typed_op(const char* name) {
  return c10::Dispatcher::singleton()
      .findSchemaOrThrow((std::string("fastclip::") + name).c_str(), "")
      .typed<Signature>();
}

// The held kernels call their op below autograd: these ops take no part in autograd (their tensors
// are grads), and the autograd fallback would box the list, one reference per tensor.
struct BelowAutograd {
  c10::impl::ExcludeDispatchKeyGuard guard{c10::autograd_dispatch_keyset_with_ADInplaceOrView};
};

}  // namespace fastclip
