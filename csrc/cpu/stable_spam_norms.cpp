// stable_spam_norms on the CPU: one parallel pass over the chunks, then each tensor's chunk
// partials folded in order (common/stable_spam_step.h), as the CUDA kernel folds them.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <vector>

#include "../common/list_plan.h"
#include "../common/stable_spam_op_args.h"
#include "cpu_parallel.h"
#include "cpu_registration.h"
#include "stable_spam_chunks.h"

namespace fastclip {
namespace cpu {
namespace {

at::Tensor stable_spam_norms_cpu(at::TensorList grads, const std::optional<at::Tensor>& maxima, const at::Tensor& rows,
                                 const at::Tensor& state, double gamma3) {
  const StableSPAMNormsArgs args{check_grads_on(grads, /*mutated=*/false, state.device()), maxima, rows, state};
  at::Tensor out = stable_spam_norms_output(args, gamma3);
  const int64_t n = static_cast<int64_t>(grads.size());
  if (n == 0) return out;
  const bool split = maxima.has_value();
  // The AdaClip threshold of each tensor, and whether it rescales anything (split only).
  std::vector<double> threshold(n, fc_inf());
  std::vector<char> rescaled(n, 0);
  if (split) {
    StableSPAMConfig config{};
    config.gamma3 = gamma3;
    const double* max_abs = maxima->const_data_ptr<double>();
    const int64_t* row = rows.const_data_ptr<int64_t>();
    const double* rows_data = state.const_data_ptr<double>();
    for (int64_t i = 0; i < n; ++i) {
      threshold[i] = adaclip_threshold(config, rows_data + stable_spam_row::count * row[i], max_abs[i]);
      rescaled[i] = adaclip_rescales(max_abs[i], threshold[i]);
    }
  }
  const ListPlan plan = plan_tensor_list(args.grads, kCpuChunkSize);
  const int64_t num_chunks = static_cast<int64_t>(plan.chunks.size());
  std::vector<double> first(num_chunks), second(num_chunks);
  for_each_chunk(plan, [&](int64_t c, const TensorMeta& meta, int64_t begin, int64_t end) {
    const int32_t tensor = plan.chunks[c].tensor;
    ChunkPair pair{0.0, 0.0};
    if (!split) {
      pair = chunk_max_and_sum_squares(meta, begin, end);
    } else if (rescaled[tensor]) {
      pair = chunk_split_sum_squares(meta, begin, end, threshold[tensor]);
    }
    first[c] = pair.first;
    second[c] = pair.second;
  });
  double* result = out.data_ptr<double>();
  for (int64_t i = 0; i < n; ++i) {
    const int64_t begin = plan.tensors[i].first_chunk;
    const int64_t end = i + 1 < n ? plan.tensors[i + 1].first_chunk : num_chunks;
    fold_stable_spam_chunks(split, first.data(), second.data(), begin, end - begin, result + i, result + n + i);
  }
  return out;
}

}  // namespace
}  // namespace cpu
}  // namespace fastclip

TORCH_LIBRARY_IMPL(fastclip, CPU, m) {
  if (fastclip::cpu::cpu_ops_run_cuda_kernels()) return;
  m.impl("stable_spam_norms", &fastclip::cpu::stable_spam_norms_cpu);
}
