#include "list_plan.h"

#include <ATen/MemoryOverlap.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <deque>
#include <limits>
#include <string>
#include <vector>

#include "tensor_prefetch.h"

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

// The bytes from t's first element to one past its last (empty for no elements).
Span span_of(const at::Tensor& t, size_t index, int list) {
  const int64_t numel = t.numel();
  if (numel == 0) return Span{0, 0, index, list};
  int64_t extent = numel;  // elements from the first to one past the last
  if (!t.is_non_overlapping_and_dense()) {
    int64_t last = 0;
    for (int64_t d = 0; d < t.dim(); ++d) last += (t.size(d) - 1) * t.stride(d);
    extent = last + 1;
  }
  const auto begin = reinterpret_cast<uintptr_t>(t.const_data_ptr());
  return Span{begin, begin + static_cast<uintptr_t>(extent * t.element_size()), index, list};
}

void add_spans(at::TensorList tensors, int list, std::vector<Span>* spans) {
  for (size_t i = 0; i < tensors.size(); ++i) {
    const Span span = span_of(tensors[i], i, list);
    if (span.begin != span.end) spans->push_back(span);
  }
}

// Calls on_pair(a, b) for every two spans that intersect (a before b in memory). O(n log n)
// when nothing intersects, O(n) when the tensors lie in memory in (or against) list order, as
// the grads of a model usually do.
template <typename OnPair>
void sweep(std::vector<Span>& spans, const OnPair& on_pair) {
  auto before = [](const Span& a, const Span& b) { return a.begin < b.begin; };
  if (std::is_sorted(spans.rbegin(), spans.rend(), before)) std::reverse(spans.begin(), spans.end());
  if (!std::is_sorted(spans.begin(), spans.end(), before)) std::sort(spans.begin(), spans.end(), before);
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

// The fingerprint of `tensors` into *out (TensorFingerprint, list_plan.h); false where a tensor
// is not dense, or undefined, or of another dtype: then the list gets none.
static_assert(sizeof(TensorFingerprint) == 24, "compared with memcmp: no padding");

bool fingerprint(at::TensorList tensors, std::vector<TensorFingerprint>* out) {
  out->resize(tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    prefetch_tensor_metadata(tensors, i);
    const at::Tensor& t = tensors[i];
    if (!t.defined() || t.layout() != at::kStrided || !t.is_non_overlapping_and_dense()) return false;
    const at::ScalarType type = t.scalar_type();
    if (!is_supported_dtype(type)) return false;
    const at::Device device = t.device();
    (*out)[i] = TensorFingerprint{t.const_data_ptr(), t.numel(), static_cast<int32_t>(type),
                                  static_cast<int32_t>(device.type()) << 16 | static_cast<uint16_t>(device.index())};
  }
  return true;
}

// The last few lists this thread checked or planned (training alternates between a handful:
// the grads, the params for AGC), most recent first. Each value comes with its fingerprint.
template <typename Value>
class RecentLists {
 public:
  // The most recent value stored under `key` for which matches(value) holds, moved to the front;
  // null if there is none.
  template <typename Matches>
  const Value* find(const std::vector<TensorFingerprint>& key, const Matches& matches) {
    for (auto it = entries_.begin(); it != entries_.end(); ++it) {
      if (it->first.size() == key.size() &&
          std::memcmp(it->first.data(), key.data(), key.size() * sizeof(TensorFingerprint)) == 0 &&
          matches(it->second)) {
        if (it != entries_.begin()) {  // to the front (erase first: push_front invalidates `it`)
          auto entry = std::move(*it);
          entries_.erase(it);
          entries_.push_front(std::move(entry));
        }
        return &entries_.front().second;
      }
    }
    return nullptr;
  }
  void add(std::vector<TensorFingerprint> key, Value value) {
    entries_.emplace_front(std::move(key), std::move(value));
    if (entries_.size() > kEntries) entries_.pop_back();
  }

 private:
  static constexpr size_t kEntries = 4;
  std::deque<std::pair<std::vector<TensorFingerprint>, Value>> entries_;
};

}  // namespace

void check_reads_apart_from_writes(at::TensorList written, const char* written_arg, at::TensorList read,
                                   const char* read_arg, bool read_is_list, const char* hint) {
  if (read.size() == 1) {  // a scale or a norm: one scan, no spans to sort (called at every step)
    const Span r = span_of(read[0], 0, 1);
    if (r.begin == r.end) return;
    for (size_t i = 0; i < written.size(); ++i) {
      prefetch_tensor_metadata(written, i);
      const Span w = span_of(written[i], i, 0);
      if (w.begin == w.end || w.end <= r.begin || r.end <= w.begin) continue;
      const at::MemOverlapStatus status = at::get_overlap_status(written[i], read[0]);
      const std::string read_name = read_is_list ? std::string(read_arg) + "[0]" : read_arg;
      TORCH_CHECK(status == at::MemOverlapStatus::No, "fastclip: ", read_name, " shares memory with ", written_arg, "[",
                  i, "], which this op writes while reading it: ", hint);
    }
    return;
  }
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

CheckedList check_tensor_list(at::TensorList tensors, const char* arg, bool mutated) {
  // A list that passed (as in-place when it is one now) needs no second look: a clipper checks
  // the same grads every step, and on lists of thousands of small tensors the checks would cost
  // more than the clip.
  thread_local RecentLists<bool> passed;  // value: checked as an in-place list
  std::vector<TensorFingerprint> key;
  const bool keyed = fingerprint(tensors, &key);
  if (keyed && passed.find(key, [&](bool as_mutated) { return as_mutated || !mutated; }) != nullptr) {
    return CheckedList(tensors, std::move(key), keyed);
  }
  for (size_t i = 0; i < tensors.size(); ++i) {
    const at::Tensor& t = tensors[i];
    TORCH_CHECK(t.defined(), "fastclip: ", arg, "[", i, "] is an undefined tensor");
    TORCH_CHECK(t.layout() == at::kStrided, "fastclip: ", arg, "[", i, "] has layout ", t.layout(),
                "; only dense (strided) tensors are supported, not sparse ones");
    TORCH_CHECK(is_supported_dtype(t.scalar_type()), "fastclip: ", arg, "[", i, "] has dtype ", t.scalar_type(),
                "; supported dtypes are float32, float16, bfloat16 and float64");
    TORCH_CHECK(t.device() == tensors[0].device(), "fastclip: ", arg, "[", i, "] is on ", t.device(), " but ", arg,
                "[0] is on ", tensors[0].device(), "; all tensors must be on one device");
    if (mutated) {
      TORCH_CHECK(at::has_internal_overlap(t) != at::MemOverlap::Yes, "fastclip: ", arg, "[", i,
                  "] has elements that share memory (e.g. an expanded tensor) and cannot be modified in place");
    }
  }
  if (mutated) check_no_overlap_between(tensors, arg);
  if (keyed) passed.add(key, mutated);
  return CheckedList(tensors, std::move(key), keyed);
}

void check_norm_type(double norm_type) {
  TORCH_CHECK(!std::isnan(norm_type) && norm_type >= 0.0, "fastclip: norm_type must be >= 0 or inf, got ", norm_type);
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
  TORCH_CHECK(is_supported_dtype(t.scalar_type()), "fastclip: ", arg,
              " must be float32, float16, bfloat16 or float64, got ", t.scalar_type());
  const bool scalar = t.numel() == 1;
  const bool per_tensor = allow_per_tensor && t.dim() == 1 && t.numel() == static_cast<int64_t>(tensors.size());
  TORCH_CHECK(scalar || per_tensor, "fastclip: ", arg, " must hold one element",
              allow_per_tensor ? " or one per tensor" : "", ", got shape ", t.sizes());
  if (!tensors.empty()) {
    TORCH_CHECK(t.device() == tensors[0].device(), "fastclip: ", arg, " is on ", t.device(), " but the tensors are on ",
                tensors[0].device());
  }
}

namespace {

ListPlan plan_in_full(at::TensorList tensors, int64_t chunk_size) {
  ListPlan plan;
  plan.chunk_size = chunk_size;
  plan.tensors.reserve(tensors.size());
  plan.chunks.reserve(tensors.size());
  int64_t chunk_count = 0;
  if (!tensors.empty()) plan.promoted_type = tensors[0].scalar_type();
  for (const at::Tensor& t : tensors) {
    plan.promoted_type = at::promoteTypes(plan.promoted_type, t.scalar_type());
    // A dense tensor in any dim order occupies exactly [data, data + numel): its elements can be
    // visited in memory order, which is all a norm, a scale or a clamp needs.
    const bool is_dense = t.is_non_overlapping_and_dense();
    if (!is_dense) plan.copies.emplace_back(plan.tensors.size(), t.contiguous());
    const at::Tensor& dense = is_dense ? t : plan.copies.back().second;
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
  }
  return plan;
}

}  // namespace

ListPlan plan_tensor_list(const CheckedList& list, int64_t chunk_size) {
  // A list planned before (the same spans and dtypes, the same chunk size) gets a copy of that
  // plan: a memcpy, where planning again costs several calls into each tensor.
  thread_local RecentLists<ListPlan> planned;
  if (!list.keyed_) return plan_in_full(list.tensors(), chunk_size);
  if (const ListPlan* plan = planned.find(list.key_, [&](const ListPlan& p) { return p.chunk_size == chunk_size; })) {
    return *plan;
  }
  ListPlan plan = plan_in_full(list.tensors(), chunk_size);
  planned.add(list.key_, plan);
  return plan;
}

void finish_mutation(const ListPlan& plan, at::TensorList tensors) {
  for (const auto& [index, copy] : plan.copies) const_cast<at::Tensor&>(tensors[index]).copy_(copy);
}

void copy_back(const std::vector<at::Tensor>& worked_on, at::TensorList tensors) {
  for (size_t i = 0; i < tensors.size(); ++i) {
    if (!worked_on[i].is_same(tensors[i])) const_cast<at::Tensor&>(tensors[i]).copy_(worked_on[i]);
  }
}

}  // namespace fastclip
