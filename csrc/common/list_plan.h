// Host-side preparation of a tensor list, shared by every op on both backends: argument checks
// that name the argument, the dense view (or copy) each kernel works on, and the chunk plan.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/ArrayRef.h>

#include <cstdint>
#include <utility>
#include <vector>

#include "tensor_list.h"

namespace fastclip {

// CPU chunks: small enough to balance two to a few dozen threads, large enough that the
// per-chunk overhead vanishes. A multiple of 16 bytes for every dtype.
constexpr int64_t kCpuChunkSize = 64 * 1024;

struct ListPlan {
  // The kernels read and write each tensor itself when it is dense in memory (any order of dims),
  // else a contiguous copy, kept here with the tensor's index (and written back by
  // `finish_mutation` for in-place ops). Dense tensors are not copied into the plan: on lists of
  // thousands of small tensors every per-tensor reference count is measurable.
  std::vector<std::pair<size_t, at::Tensor>> copies;
  std::vector<TensorMeta> tensors;
  std::vector<ChunkMeta> chunks;
  int64_t chunk_size = 0;
  bool any_double = false;
  at::ScalarType promoted_type = at::kFloat;  // torch's type promotion over the list
};

DType to_dtype(at::ScalarType type);
bool is_supported_dtype(at::ScalarType type);

// What a check or a plan of one dense tensor depends on. A list with the same fingerprint, entry
// by entry, passes the same checks (same dtypes, one device, the same memory spans) and gets the
// same plan, whichever tensor objects hold those spans.
struct TensorFingerprint {
  const void* data;
  int64_t numel;
  int32_t dtype;
  int32_t device;  // type and index
};

// A list that passed check_tensor_list, as plan_tensor_list takes it: the list and the fingerprint
// the check computed, so that an op fingerprints its list once (on lists of tens of thousands of
// tensors, fingerprinting is most of an op's host time). Only check_tensor_list makes one, so
// every list planned was checked. `tensors()` views the op's own argument (at::TensorList does not
// own its tensors): keep a CheckedList no longer than the op call. Move-only: the fingerprint is
// 24 bytes per tensor.
class CheckedList {
 public:
  CheckedList(CheckedList&&) = default;
  CheckedList& operator=(CheckedList&&) = default;
  CheckedList(const CheckedList&) = delete;
  CheckedList& operator=(const CheckedList&) = delete;

  at::TensorList tensors() const { return tensors_; }
  size_t size() const { return tensors_.size(); }
  bool empty() const { return tensors_.empty(); }

 private:
  friend CheckedList check_tensor_list(at::TensorList tensors, const char* arg, bool mutated);
  friend ListPlan plan_tensor_list(const CheckedList& list, int64_t chunk_size);
  CheckedList(at::TensorList tensors, std::vector<TensorFingerprint> key, bool keyed)
      : tensors_(tensors), key_(std::move(key)), keyed_(keyed) {}

  at::TensorList tensors_;
  std::vector<TensorFingerprint> key_;
  // Whether key_ is the list's fingerprint. A list with a tensor that is undefined, not dense or
  // of another dtype gets none: it is checked and planned in full every time.
  bool keyed_;
};

// Checks every entry of `tensors` (named `arg` in errors): defined, strided, a supported dtype,
// all on one device; for `mutated` lists also free of internal overlap.
CheckedList check_tensor_list(at::TensorList tensors, const char* arg, bool mutated);
// (A temporary vector would be gone before the plan: check the op's argument itself.)
CheckedList check_tensor_list(std::vector<at::Tensor>&& tensors, const char* arg, bool mutated) = delete;
// Refuses an entry of `read` that shares memory with an entry of `written`: the kernels read it
// (through the GPU's read-only cache, or once per block) while other threads write. `hint` says
// what to do instead.
void check_reads_apart_from_writes(at::TensorList written, const char* written_arg, at::TensorList read,
                                   const char* read_arg, bool read_is_list, const char* hint);

// Checks norm_type: p >= 0 or +inf.
void check_norm_type(double norm_type);

// Checks a bound such as max_norm or clip_value: >= 0 (inf allowed), not NaN.
void check_nonnegative(double value, const char* arg);

// Checks a hyperparameter such as clip_factor (finite and > 0) or eps (finite and >= 0).
void check_finite_positive(double value, const char* arg);
void check_finite_nonnegative(double value, const char* arg);

// A 0-d or per-tensor scale/norm tensor must be floating point, on the list's device, of the right size.
void check_scalar_tensor(const at::Tensor& t, const char* arg, at::TensorList tensors, bool allow_per_tensor);

// The plan of a checked list, in chunks of `chunk_size` elements (kCpuChunkSize on the CPU; the
// CUDA side's prepare_on_device picks its own).
ListPlan plan_tensor_list(const CheckedList& list, int64_t chunk_size);

// For in-place ops: copies results computed on contiguous copies back into the original views
// (worked_on[i] is tensors[i] itself, or the copy the kernels wrote).
void copy_back(const std::vector<at::Tensor>& worked_on, at::TensorList tensors);
void finish_mutation(const ListPlan& plan, at::TensorList tensors);

}  // namespace fastclip
