#include <ATen/ATen.h>
#include <torch/library.h>

#include <vector>

#include "../common/list_plan.h"
#include "cpu_chunk_ops.h"
#include "cpu_passes.h"
#include "cpu_parallel.h"

namespace fastclip {
namespace cpu {
namespace {

template <typename acc_t>
std::tuple<at::Tensor, at::Tensor> norm_of_plan(const ListPlan& plan, NormKind kind, acc_t p, bool per_tensor,
                                                at::ScalarType acc_type) {
  const int64_t num_chunks = static_cast<int64_t>(plan.chunks.size());
  const int64_t num_tensors = static_cast<int64_t>(plan.tensors.size());
  std::vector<acc_t> chunk_partials(num_chunks);
  for_each_chunk(plan, [&](int64_t c, const TensorMeta& meta, int64_t begin, int64_t end) {
    chunk_partials[c] = chunk_partial(kind, meta, begin, end, p);
  });

  at::Tensor per_tensor_norms = at::empty({per_tensor ? num_tensors : 0}, at::TensorOptions().dtype(acc_type));
  acc_t* per_tensor_out = per_tensor ? per_tensor_norms.data_ptr<acc_t>() : nullptr;
  std::vector<acc_t> contributions(num_tensors);
  for (int64_t t = 0; t < num_tensors; ++t) {
    const int64_t first = plan.tensors[t].first_chunk;
    const int64_t stop = t + 1 < num_tensors ? plan.tensors[t + 1].first_chunk : num_chunks;
    const acc_t partial = blocked_combine(kind, chunk_partials.data() + first, stop - first);
    contributions[t] = total_contribution(kind, partial);
    if (per_tensor_out) per_tensor_out[t] = norm_finalize(kind, partial, p);
  }
  const acc_t total = norm_finalize(kind, blocked_combine(kind, contributions.data(), num_tensors), p);
  return {at::scalar_tensor(total, at::TensorOptions().dtype(acc_type)).to(plan.promoted_type), per_tensor_norms};
}

std::tuple<at::Tensor, at::Tensor> multi_tensor_norm_cpu(at::TensorList tensors, double norm_type, bool per_tensor) {
  check_norm_type(norm_type);
  TORCH_CHECK(!tensors.empty(), "fastclip: tensors must not be empty");
  check_tensor_list(tensors, "tensors", /*mutated=*/false);
  return norm_pass(plan_tensor_list(tensors, kCpuChunkSize), norm_type, per_tensor);
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> norm_pass(const ListPlan& plan, double norm_type, bool per_tensor) {
  const NormKind kind = norm_kind_for(norm_type);
  if (plan.any_double) return norm_of_plan<double>(plan, kind, norm_type, per_tensor, at::kDouble);
  return norm_of_plan<float>(plan, kind, static_cast<float>(norm_type), per_tensor, at::kFloat);
}

}  // namespace cpu
}  // namespace fastclip

TORCH_LIBRARY_IMPL(fastclip, CPU, m) {
  m.impl("multi_tensor_norm", &fastclip::cpu::multi_tensor_norm_cpu);
}
