#include "cpu_passes.h"

#include <ATen/ATen.h>

#include <cstring>
#include <type_traits>

#include "cpu_chunk_ops.h"
#include "cpu_parallel.h"

namespace fastclip {
namespace cpu {
namespace {

// Chunk partials are range-safe doubles (common/norm_math.h): each chunk's sum (in acc_t, or in
// double for general p), then partial_from_sum.
template <typename acc_t>
std::tuple<at::Tensor, at::Tensor> norm_of_plan(const ListPlan& plan, NormKind kind, double p, bool per_tensor,
                                                at::ScalarType acc_type, double* accumulated) {
  const int64_t num_chunks = static_cast<int64_t>(plan.chunks.size());
  const int64_t num_tensors = static_cast<int64_t>(plan.tensors.size());
  std::vector<double> chunk_partials(num_chunks);
  auto store_partial = [&](int64_t c, const TensorMeta& meta, int64_t begin, int64_t end, auto sum) {
    chunk_partials[c] = partial_from_sum(kind, meta, begin, end, p, sum);
  };
  if constexpr (std::is_same_v<acc_t, float>) {
    // Two chunks at a time where they have one dtype and length (chunk_partial_pair).
    at::parallel_for(0, num_chunks, 1, [&](int64_t first, int64_t last) {
      for (int64_t c = first; c < last;) {
        const TensorMeta& meta = plan.tensors[plan.chunks[c].tensor];
        int64_t begin = 0, end = 0;
        chunk_range(meta, plan.chunks[c], plan.chunk_size, &begin, &end);
        if (c + 1 < last) {
          const TensorMeta& next = plan.tensors[plan.chunks[c + 1].tensor];
          int64_t next_begin = 0, next_end = 0;
          chunk_range(next, plan.chunks[c + 1], plan.chunk_size, &next_begin, &next_end);
          float sums[2];
          if (end - begin == next_end - next_begin &&
              chunk_partial_pair(kind, meta, begin, next, next_begin, end - begin, static_cast<float>(p), sums)) {
            store_partial(c, meta, begin, end, sums[0]);
            store_partial(c + 1, next, next_begin, next_end, sums[1]);
            c += 2;
            continue;
          }
        }
        if (kind == NormKind::kGeneral) {  // summed in double (norm_math.h's chunk_sum_t)
          store_partial(c, meta, begin, end, chunk_partial(kind, meta, begin, end, p));
        } else {
          store_partial(c, meta, begin, end, chunk_partial(kind, meta, begin, end, static_cast<float>(p)));
        }
        ++c;
      }
    });
  } else {
    for_each_chunk(plan, [&](int64_t c, const TensorMeta& meta, int64_t begin, int64_t end) {
      store_partial(c, meta, begin, end, chunk_partial(kind, meta, begin, end, p));
    });
  }

  at::Tensor per_tensor_norms = at::empty({per_tensor ? num_tensors : 0}, at::TensorOptions().dtype(acc_type));
  acc_t* per_tensor_out = per_tensor ? per_tensor_norms.data_ptr<acc_t>() : nullptr;
  std::vector<double> contributions(num_tensors);
  for (int64_t t = 0; t < num_tensors; ++t) {
    const int64_t first = plan.tensors[t].first_chunk;
    const int64_t stop = t + 1 < num_tensors ? plan.tensors[t + 1].first_chunk : num_chunks;
    const double partial = blocked_combine(kind, chunk_partials.data() + first, stop - first);
    contributions[t] = total_contribution(kind, partial);
    if (per_tensor_out) per_tensor_out[t] = static_cast<acc_t>(norm_finalize(kind, partial, p));
  }
  const acc_t total =
      static_cast<acc_t>(norm_finalize(kind, blocked_combine(kind, contributions.data(), num_tensors), p));
  if (accumulated != nullptr) *accumulated = static_cast<double>(total);
  return {at::scalar_tensor(total, at::TensorOptions().dtype(acc_type)).to(plan.promoted_type), per_tensor_norms};
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> norm_pass(const ListPlan& plan, double norm_type, bool per_tensor,
                                             double* accumulated) {
  const NormKind kind = norm_kind_for(norm_type);
  if (plan.any_double) return norm_of_plan<double>(plan, kind, norm_type, per_tensor, at::kDouble, accumulated);
  return norm_of_plan<float>(plan, kind, norm_type, per_tensor, at::kFloat, accumulated);
}

void scale_pass(const ListPlan& plan, const std::vector<double>& coef_per_tensor, bool clear_on_zero) {
  for_each_chunk(
      plan,
      [&](int64_t, const TensorMeta& meta, int64_t begin, int64_t end) {
        const double coef = coef_per_tensor[&meta - plan.tensors.data()];
        if (clear_on_zero && coef == 0.0) {
          const int64_t bytes = dtype_size(meta.dtype);
          std::memset(static_cast<char*>(meta.data) + begin * bytes, 0, (end - begin) * bytes);
        } else if (coef != 1.0) {
          chunk_scale(meta, begin, end, coef);
        }
      },
      /*recent_first=*/true);
}

void scale_list(const CheckedList& tensors, const std::vector<double>& coef_per_tensor, bool clear_on_zero) {
  const ListPlan plan = plan_tensor_list(tensors, kCpuChunkSize);
  scale_pass(plan, coef_per_tensor, clear_on_zero);
  finish_mutation(plan, tensors.tensors());
}

double clip_coefficient_of(const at::Tensor& total_norm, double max_norm) {
  return clip_coefficient_of(total_norm, total_norm.item<double>(), max_norm);
}

double clip_coefficient_of(const at::Tensor& total_norm, double accumulated, double max_norm) {
  const double total = coefficient_total(total_norm.item<double>(), accumulated);
  if (total_norm.scalar_type() == at::kDouble) return clip_coefficient<double>(max_norm, total);
  return clip_coefficient<float>(static_cast<float>(max_norm), static_cast<float>(total));
}

}  // namespace cpu
}  // namespace fastclip
