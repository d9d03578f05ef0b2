// agc_clip_ on CUDA: checks, device guard, current stream, the table of rows uploaded, one launch
// (three where a row is long enough to be cut into segments: kernels.h).
#include <ATen/ATen.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <vector>

#include "../common/agc_rows.h"
#include "../common/agc_step.h"
#include "../common/list_op_args.h"
#include "../common/list_plan.h"
#include "device_runtime.h"
#include "kernels.h"

namespace fastclip {
namespace cuda {
namespace {

void agc_clip_cuda(at::TensorList grads, at::TensorList params, double clip_factor, double eps) {
  check_agc_clip_args(grads, params, clip_factor, eps);
  if (grads.empty()) return;
  const at::Device device = grads[0].device();
  const DeviceScope scope(device);
  const AgcRows tensors = agc_rows_of(grads, params);
  std::vector<AgcTensor> table;
  table.reserve(grads.size());
  for (size_t i = 0; i < grads.size(); ++i) {
    const at::Tensor& g = tensors.grads[i];
    const at::Tensor& p = tensors.params[i];
    const int64_t rows = agc_num_rows(g.dim(), g.numel(), g.dim() ? g.size(0) : 1);
    if (rows == 0) continue;  // empty: nothing to clip
    AgcTensor entry{};
    entry.grad = g.data_ptr();
    entry.param = p.const_data_ptr();
    entry.num_rows = rows;
    entry.row_length = g.numel() / rows;
    entry.grad_dtype = static_cast<int32_t>(to_dtype(g.scalar_type()));
    entry.param_dtype = static_cast<int32_t>(to_dtype(p.scalar_type()));
    table.push_back(entry);
  }
  if (table.empty()) return;
  TORCH_CHECK(table.size() <= static_cast<size_t>(std::numeric_limits<int32_t>::max()),
              "fastclip: agc_clip_ takes at most 2^31 - 1 non-empty tensors, got ", table.size());
  AgcParams launch_params{};
  plan_agc_units(table.data(), static_cast<int64_t>(table.size()), &launch_params.total_rows,
                 &launch_params.total_segments);
  const size_t table_bytes = table.size() * sizeof(AgcTensor);
  const at::Tensor device_table =
      upload_to_device(table_bytes, [&](uint8_t* host) { std::memcpy(host, table.data(), table_bytes); }, scope);
  const at::Tensor partials =
      at::empty({2 * launch_params.total_segments}, at::TensorOptions().dtype(at::kDouble).device(device));
  launch_params.tensors = reinterpret_cast<const AgcTensor*>(device_table.const_data_ptr());
  launch_params.num_tensors = static_cast<int32_t>(table.size());
  launch_params.partials = launch_params.total_segments > 0 ? partials.data_ptr<double>() : nullptr;
  launch_params.clip_factor = clip_factor;
  launch_params.eps = eps;
  // As many blocks as fit on the GPU at once (the kernels' launch bounds); a block per unit when fewer.
  const int resident = kAgcBlocksPerSM * multiprocessor_count(device.index());
  check_launch([&] { return launch_agc_clip(launch_params, resident, scope.stream()); });
  copy_back(tensors.grads, grads);
}

}  // namespace
}  // namespace cuda
}  // namespace fastclip

TORCH_LIBRARY_IMPL(fastclip, FASTCLIP_CUDA_DISPATCH_KEY, m) { m.impl("agc_clip_", &fastclip::cuda::agc_clip_cuda); }
