// stable_spam_norms on CUDA: checks, device guard, current stream, one launch. No host sync.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "../common/stable_spam_op_args.h"
#include "device_list.h"
#include "device_runtime.h"
#include "stable_spam_kernels.h"

namespace fastclip {
namespace cuda {
namespace {

at::Tensor stable_spam_norms_cuda(at::TensorList grads, const std::optional<at::Tensor>& maxima, const at::Tensor& rows,
                                  const at::Tensor& state, double gamma3) {
  const StableSPAMNormsArgs args{check_grads_on(grads, /*mutated=*/false, state.device()), maxima, rows, state};
  at::Tensor out = stable_spam_norms_output(args, gamma3);
  if (grads.empty()) return out;
  const DeviceScope scope(state.device());
  const DeviceListPlan prepared = prepare_on_device(args.grads, scope);
  const int64_t num_chunks = prepared.list.num_chunks;
  // Scratch: the chunk partials, then the ticket counter (zeroed here).
  at::Tensor scratch = at::empty({2 * num_chunks + 1}, at::TensorOptions().dtype(at::kDouble).device(state.device()));
  double* partials = scratch.data_ptr<double>();
  auto* blocks_done = reinterpret_cast<unsigned int*>(partials + 2 * num_chunks);
  zero_async(blocks_done, sizeof(unsigned int), prepared.stream);
  const StableSPAMNormsParams params{prepared.list,
                                     maxima.has_value() ? maxima->const_data_ptr<double>() : nullptr,
                                     rows.const_data_ptr<int64_t>(),
                                     state.const_data_ptr<double>(),
                                     state.size(0),
                                     gamma3,
                                     partials,
                                     partials + num_chunks,
                                     out.data_ptr<double>(),
                                     blocks_done};
  check_launch([&] { return launch_stable_spam_norms(params, prepared.grid(), prepared.stream); });
  return out;
}

}  // namespace
}  // namespace cuda
}  // namespace fastclip

TORCH_LIBRARY_IMPL(fastclip, FASTCLIP_CUDA_DISPATCH_KEY, m) {
  m.impl("stable_spam_norms", &fastclip::cuda::stable_spam_norms_cuda);
}
