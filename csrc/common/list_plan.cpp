#include "list_plan.h"

#include <ATen/MemoryOverlap.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

namespace fastclip {

bool is_supported_dtype(at::ScalarType type) {
  return type == at::kFloat || type == at::kHalf || type == at::kBFloat16 || type == at::kDouble;
}

DType to_dtype(at::ScalarType type) {
  switch (type) {
    case at::kFloat: return DType::kFloat32;
    case at::kHalf: return DType::kFloat16;
    case at::kBFloat16: return DType::kBFloat16;
    case at::kDouble: return DType::kFloat64;
    default: TORCH_CHECK(false, "fastclip: unsupported dtype ", type);
  }
}

namespace {

struct Span {
  uintptr_t begin, end;
  size_t index;
  int list;  // which of the lists checked against each other
};

void add_spans(at::TensorList tensors, int list, std::vector<Span>* spans) {
  for (size_t i = 0; i < tensors.size(); ++i) {
    const at::Tensor& t = tensors[i];
    if (t.numel() == 0) continue;
    int64_t last = 0;
    for (int64_t d = 0; d < t.dim(); ++d) last += (t.size(d) - 1) * t.stride(d);
    const auto begin = reinterpret_cast<uintptr_t>(t.data_ptr());
    spans->push_back(Span{begin, begin + static_cast<uintptr_t>((last + 1) * t.element_size()), i, list});
  }
}

// Calls on_pair(a, b) for every two spans that intersect (a before b in memory). O(n log n)
// when nothing intersects.
template <typename OnPair>
void sweep(std::vector<Span>& spans, const OnPair& on_pair) {
  std::sort(spans.begin(), spans.end(), [](const Span& a, const Span& b) { return a.begin < b.begin; });
  std::vector<const Span*> active;  // earlier spans still open at the current begin
  for (const Span& span : spans) {
    active.erase(std::remove_if(active.begin(), active.end(), [&](const Span* a) { return a->end <= span.begin; }),
                 active.end());
    for (const Span* other : active) on_pair(*other, span);
    active.push_back(&span);
  }
}

// Two entries of an in-place list that share memory would be written by different threads or
// blocks at once. Spans that intersect are refined by torch's overlap test. Where that test
// cannot decide (strided views such as x[:, ::2] and x[:, 1::2]), the list is refused rather
// than risk it.
void check_no_overlap_between(at::TensorList tensors, const char* arg) {
  std::vector<Span> spans;
  spans.reserve(tensors.size());
  add_spans(tensors, 0, &spans);
  sweep(spans, [&](const Span& a, const Span& b) {
    const size_t i = std::min(a.index, b.index), j = std::max(a.index, b.index);
    const at::MemOverlapStatus status = at::get_overlap_status(tensors[i], tensors[j]);
    TORCH_CHECK(status != at::MemOverlapStatus::TooHard, "fastclip: ", arg, "[", i, "] and ", arg, "[", j,
                "] are strided views of one buffer that may share memory; modify them in separate calls");
    TORCH_CHECK(status == at::MemOverlapStatus::No, "fastclip: ", arg, "[", i, "] and ", arg, "[", j,
                "] share memory (the same tensor twice, or overlapping views) and cannot both be modified in place");
  });
}

}  // namespace

void check_reads_apart_from_writes(at::TensorList written, const char* written_arg, at::TensorList read,
                                   const char* read_arg, bool read_is_list, const char* hint) {
  std::vector<Span> spans;
  spans.reserve(written.size() + read.size());
  add_spans(written, 0, &spans);
  add_spans(read, 1, &spans);
  sweep(spans, [&](const Span& a, const Span& b) {
    if (a.list == b.list) return;
    const Span& w = a.list == 0 ? a : b;
    const Span& r = a.list == 0 ? b : a;
    const at::MemOverlapStatus status = at::get_overlap_status(written[w.index], read[r.index]);
    const std::string read_name = read_is_list ? std::string(read_arg) + "[" + std::to_string(r.index) + "]" : read_arg;
    TORCH_CHECK(status == at::MemOverlapStatus::No, "fastclip: ", read_name, " shares memory with ", written_arg, "[",
                w.index, "], which this op writes while reading it: ", hint);
  });
}

void check_tensor_list(at::TensorList tensors, const char* arg, bool mutated) {
  for (size_t i = 0; i < tensors.size(); ++i) {
    const at::Tensor& t = tensors[i];
    TORCH_CHECK(t.defined(), "fastclip: ", arg, "[", i, "] is an undefined tensor");
    TORCH_CHECK(t.layout() == at::kStrided, "fastclip: ", arg, "[", i, "] has layout ", t.layout(),
                "; only dense (strided) tensors are supported, not sparse ones");
    TORCH_CHECK(is_supported_dtype(t.scalar_type()), "fastclip: ", arg, "[", i, "] has dtype ",
                t.scalar_type(), "; supported dtypes are float32, float16, bfloat16 and float64");
    TORCH_CHECK(t.device() == tensors[0].device(), "fastclip: ", arg, "[", i, "] is on ", t.device(),
                " but ", arg, "[0] is on ", tensors[0].device(), "; all tensors must be on one device");
    if (mutated) {
      TORCH_CHECK(at::has_internal_overlap(t) != at::MemOverlap::Yes, "fastclip: ", arg, "[", i,
                  "] has elements that share memory (e.g. an expanded tensor) and cannot be modified in place");
    }
  }
  if (mutated) check_no_overlap_between(tensors, arg);
}

void check_norm_type(double norm_type) {
  TORCH_CHECK(!std::isnan(norm_type) && norm_type >= 0.0,
              "fastclip: norm_type must be >= 0 or inf, got ", norm_type);
}

void check_nonnegative(double value, const char* arg) {
  TORCH_CHECK(!std::isnan(value) && value >= 0.0, "fastclip: ", arg, " must be >= 0, got ", value);
}

void check_finite_positive(double value, const char* arg) {
  TORCH_CHECK(std::isfinite(value) && value > 0.0, "fastclip: ", arg, " must be finite and > 0, got ", value);
}

void check_finite_nonnegative(double value, const char* arg) {
  TORCH_CHECK(std::isfinite(value) && value >= 0.0, "fastclip: ", arg, " must be finite and >= 0, got ", value);
}

void check_scalar_tensor(const at::Tensor& t, const char* arg, at::TensorList tensors, bool allow_per_tensor) {
  TORCH_CHECK(t.defined(), "fastclip: ", arg, " is undefined");
  TORCH_CHECK(is_supported_dtype(t.scalar_type()), "fastclip: ", arg, " must be float32, float16, bfloat16 or float64, got ",
              t.scalar_type());
  const bool scalar = t.numel() == 1;
  const bool per_tensor = allow_per_tensor && t.dim() == 1 && t.numel() == static_cast<int64_t>(tensors.size());
  TORCH_CHECK(scalar || per_tensor, "fastclip: ", arg, " must hold one element",
              allow_per_tensor ? " or one per tensor" : "", ", got shape ", t.sizes());
  if (!tensors.empty()) {
    TORCH_CHECK(t.device() == tensors[0].device(), "fastclip: ", arg, " is on ", t.device(),
                " but the tensors are on ", tensors[0].device());
  }
}

ListPlan plan_tensor_list(at::TensorList tensors, int64_t chunk_size) {
  ListPlan plan;
  plan.chunk_size = chunk_size;
  plan.dense.reserve(tensors.size());
  plan.tensors.reserve(tensors.size());
  int64_t chunk_count = 0;
  if (!tensors.empty()) plan.promoted_type = tensors[0].scalar_type();
  for (const at::Tensor& t : tensors) {
    plan.promoted_type = at::promoteTypes(plan.promoted_type, t.scalar_type());
    // A dense tensor in any dim order occupies exactly [data, data + numel): its elements can be
    // visited in memory order, which is all a norm, a scale or a clamp needs.
    at::Tensor dense = t.is_non_overlapping_and_dense() ? t : t.contiguous();
    const int64_t numel = dense.numel();
    const int64_t tensor_chunks = (numel + chunk_size - 1) / chunk_size;
    TORCH_CHECK(chunk_count + tensor_chunks <= std::numeric_limits<int32_t>::max(),
                "fastclip: the tensor list is too large (more than 2^31 chunks)");
    TensorMeta meta;
    meta.data = dense.data_ptr();
    meta.numel = numel;
    meta.dtype = static_cast<int32_t>(to_dtype(dense.scalar_type()));
    meta.first_chunk = static_cast<int32_t>(chunk_count);
    const int32_t tensor_index = static_cast<int32_t>(plan.tensors.size());
    for (int64_t c = 0; c < tensor_chunks; ++c) {
      plan.chunks.push_back(ChunkMeta{tensor_index, static_cast<int32_t>(c)});
    }
    chunk_count += tensor_chunks;
    plan.any_double = plan.any_double || dense.scalar_type() == at::kDouble;
    plan.tensors.push_back(meta);
    plan.dense.push_back(std::move(dense));
  }
  return plan;
}

void copy_back(const std::vector<at::Tensor>& worked_on, at::TensorList tensors) {
  for (size_t i = 0; i < tensors.size(); ++i) {
    if (!worked_on[i].is_same(tensors[i])) const_cast<at::Tensor&>(tensors[i]).copy_(worked_on[i]);
  }
}

}  // namespace fastclip
