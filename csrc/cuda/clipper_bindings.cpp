// Torch-facing CUDA entry points of the stateful clippers' statistics steps and of AGC: the
// CPU ops' own argument checks (common/stats_args.h), device guard, current stream, one launch
// each. No host sync: norms are read on the device, whatever their float dtype.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <optional>
#include <string>
#include <vector>

#include "../common/agc_step.h"
#include "../common/list_plan.h"
#include "../common/stats_args.h"
#include "clipper_launch.h"
#include "device_upload.h"
#include "launch.h"

namespace fastclip {
namespace cuda {
namespace {

DeviceValues device_values(const at::Tensor& t) {
  return DeviceValues{t.const_data_ptr(), static_cast<int32_t>(to_dtype(t.scalar_type()))};
}

cudaStream_t current_stream(const at::Device& device) {
  return c10::cuda::getCurrentCUDAStream(device.index()).stream();
}

void zclip_update_cuda(const at::Tensor& norm, at::Tensor& state, at::Tensor& result, double alpha, double z_thresh,
                       std::optional<double> max_grad_norm, double eps, int64_t warmup_steps, c10::string_view mode,
                       c10::string_view clip_option, double clip_factor, bool skip_update_on_spike,
                       c10::string_view on_nonfinite, bool reference) {
  const ZClipConfig config = zclip_config(norm, state, result, alpha, z_thresh, max_grad_norm, eps, warmup_steps,
                                          std::string(mode), std::string(clip_option), clip_factor,
                                          skip_update_on_spike, std::string(on_nonfinite), reference);
  const c10::cuda::CUDAGuard guard(norm.device());
  C10_CUDA_CHECK(launch_zclip_update(config, device_values(norm), state.data_ptr<double>(), result.data_ptr<float>(),
                                     current_stream(norm.device())));
}

void autoclip_update_cuda(const at::Tensor& total_norm, const at::Tensor& norms, const at::Tensor& rows,
                          at::Tensor& lower, at::Tensor& upper, at::Tensor& window, at::Tensor& counters,
                          at::Tensor& result, at::Tensor& coef, at::Tensor& threshold, double percentile, bool lag,
                          c10::string_view on_nonfinite, bool reference) {
  const AutoClipConfig config = autoclip_config(total_norm, norms, rows, lower, upper, window, counters, result, coef,
                                                threshold, percentile, lag, std::string(on_nonfinite), reference);
  const c10::cuda::CUDAGuard guard(total_norm.device());
  const AutoClipBuffers buffers{lower.data_ptr<float>(), lower.size(1),        upper.data_ptr<float>(), upper.size(1),
                                window.data_ptr<float>(), window.size(1), counters.data_ptr<int64_t>()};
  const EntryOutputs out{rows.const_data_ptr<int64_t>(), counters.size(0), coef.data_ptr<float>(),
                         threshold.data_ptr<float>()};
  C10_CUDA_CHECK(launch_autoclip_update(config, buffers, out, device_values(total_norm), device_values(norms),
                                        norms.numel(), result.data_ptr<float>(), current_stream(total_norm.device())));
}

void adagc_update_cuda(const at::Tensor& total_norm, const at::Tensor& norms, const at::Tensor& rows,
                       at::Tensor& gamma, at::Tensor& steps, at::Tensor& result, at::Tensor& coef,
                       at::Tensor& threshold, double lambda_abs, double lambda_rel, double beta,
                       int64_t warmup_steps, double eps, c10::string_view on_nonfinite, bool reference) {
  const AdaGCConfig config = adagc_config(total_norm, norms, rows, gamma, steps, result, coef, threshold, lambda_abs,
                                          lambda_rel, beta, warmup_steps, eps, std::string(on_nonfinite), reference);
  const c10::cuda::CUDAGuard guard(total_norm.device());
  const EntryOutputs out{rows.const_data_ptr<int64_t>(), gamma.size(0), coef.data_ptr<float>(),
                         threshold.data_ptr<float>()};
  C10_CUDA_CHECK(launch_adagc_update(config, gamma.data_ptr<double>(), steps.data_ptr<double>(), out,
                                     device_values(total_norm), device_values(norms), norms.numel(),
                                     result.data_ptr<float>(), current_stream(total_norm.device())));
}

// As the CPU op decides (csrc/cpu/agc_clip.cpp): a tensor whose output rows are contiguous
// blocks (dim 0 outermost, any order inside a row) is used in place; anything else through a
// contiguous copy, written back after the kernel.
bool rows_are_blocks(const at::Tensor& t) {
  return t.is_non_overlapping_and_dense() && (t.dim() <= 1 || t.numel() == 0 || t.stride(0) == t.numel() / t.size(0));
}

void agc_clip_cuda(at::TensorList grads, at::TensorList params, double clip_factor, double eps) {
  check_agc_args(grads, params, clip_factor, eps);
  if (grads.empty()) return;
  const at::Device device = grads[0].device();
  const c10::cuda::CUDAGuard guard(device);
  const c10::cuda::CUDAStream stream = c10::cuda::getCurrentCUDAStream(device.index());
  std::vector<at::Tensor> grad_rows(grads.size()), param_rows(params.size());
  std::vector<AgcTensor> table;
  table.reserve(grads.size());
  int64_t total_rows = 0;
  for (size_t i = 0; i < grads.size(); ++i) {
    grad_rows[i] = rows_are_blocks(grads[i]) ? grads[i] : grads[i].contiguous();
    param_rows[i] = rows_are_blocks(params[i]) ? params[i] : params[i].contiguous();
    const at::Tensor& g = grad_rows[i];
    const at::Tensor& p = param_rows[i];
    const int64_t rows = agc_num_rows(g.dim(), g.numel(), g.dim() ? g.size(0) : 1);
    if (rows == 0) continue;  // empty: nothing to clip
    AgcTensor entry;
    entry.grad = g.data_ptr();
    entry.param = p.const_data_ptr();
    entry.num_rows = rows;
    entry.row_length = g.numel() / rows;
    entry.first_row = total_rows;
    entry.grad_dtype = static_cast<int32_t>(to_dtype(g.scalar_type()));
    entry.param_dtype = static_cast<int32_t>(to_dtype(p.scalar_type()));
    table.push_back(entry);
    total_rows += rows;
  }
  if (table.empty()) return;
  TORCH_CHECK(table.size() <= static_cast<size_t>(std::numeric_limits<int32_t>::max()),
              "fastclip: agc_clip_ takes at most 2^31 - 1 non-empty tensors, got ", table.size());
  const size_t table_bytes = table.size() * sizeof(AgcTensor);
  const at::Tensor device_table = upload_to_device(
      table_bytes, [&](uint8_t* host) { std::memcpy(host, table.data(), table_bytes); }, stream);
  AgcParams launch_params;
  launch_params.tensors = reinterpret_cast<const AgcTensor*>(device_table.const_data_ptr());
  launch_params.num_tensors = static_cast<int32_t>(table.size());
  launch_params.total_rows = total_rows;
  launch_params.clip_factor = clip_factor;
  launch_params.eps = eps;
  // As many blocks as fit on the GPU at once (the kernel's launch bounds); a block per row when fewer.
  const int64_t resident = kAgcBlocksPerSM * static_cast<int64_t>(multiprocessor_count(device.index()));
  const int num_blocks = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(total_rows, resident)));
  C10_CUDA_CHECK(launch_agc_clip(launch_params, num_blocks, stream.stream()));
  for (size_t i = 0; i < grads.size(); ++i) {
    if (!grad_rows[i].is_same(grads[i])) grads[i].copy_(grad_rows[i]);
  }
}

}  // namespace
}  // namespace cuda
}  // namespace fastclip

TORCH_LIBRARY_IMPL(fastclip, CUDA, m) {
  m.impl("zclip_update_", &fastclip::cuda::zclip_update_cuda);
  m.impl("autoclip_update_", &fastclip::cuda::autoclip_update_cuda);
  m.impl("adagc_update_", &fastclip::cuda::adagc_update_cuda);
  m.impl("agc_clip_", &fastclip::cuda::agc_clip_cuda);
}
