// What the self-test's parts share: the failure count, the tolerances, and "device memory" for
// the kernels (the layer's device memory is host memory) laid out so that the sanitizers see
// every access outside it: exact-size heap arrays, and tensor buffers that start misaligned
// inside their allocation behind a guard of NaNs and end exactly where their allocation does.
#pragma once

#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "../../common/tensor_list.h"
#include "../../cuda/kernels.h"
#include "../../cuda/stats_kernels.h"

namespace fastclip {
namespace selftest {

// The kernels' parameter structs (csrc/cuda/kernels.h, stats_kernels.h) by their short names.
using cuda::AgcParams;
using cuda::AgcTensor;
using cuda::ChunkList;
using cuda::ClampParams;
using cuda::ClipByNormParams;
using cuda::DeviceValues;
using cuda::EntryParams;
using cuda::NormParams;
using cuda::ScaleParams;

// Records a failed check (printed at once); main() exits non-zero if there was any.
void expect(bool ok, const std::string& what);
int failure_count();
int check_count();

// A launch returned cudaSuccess; otherwise records the layer's message.
void expect_launched(cudaError_t error, const std::string& what);

// The relative error allowed in a result that was accumulated, computed or stored in `dtype`,
// against a reference computed in double from the same stored inputs: a few roundings of the
// dtype's precision (the sums here have at most a few thousand terms). The one place the
// tolerances are stated; a check that involves several dtypes takes the loosest.
double tolerance(DType dtype);
double tolerance(std::initializer_list<DType> dtypes);

// |actual - expected| <= rtol |expected|; a NaN matches only a NaN, an infinity only itself.
bool close(double actual, double expected, double rtol);

const char* dtype_name(DType dtype);
std::string describe(double actual, double expected);

// expect(close(actual, expected, rtol), ...), naming the value by where() + describe(...):
// where() is called only on failure (the tests check every element).
template <typename Where>
void expect_close(double actual, double expected, double rtol, const Where& where) {
  const bool ok = close(actual, expected, rtol);
  expect(ok, ok ? std::string() : where() + " " + describe(actual, expected));
}

// Element i of an array of `dtype`, widened to double (exactly), and stored into one (rounded).
double load_element(const void* data, DType dtype, int64_t i);
void store_element(void* data, DType dtype, int64_t i, double value);

// A heap array of exactly `size` elements: reading one past the end is an ASan report.
template <typename T>
class ExactArray {
 public:
  explicit ExactArray(size_t size = 0) : data_(new T[size]()), size_(size) {}
  explicit ExactArray(const std::vector<T>& values) : ExactArray(values.size()) {
    if (!values.empty()) std::memcpy(data_.get(), values.data(), values.size() * sizeof(T));
  }
  T* data() { return data_.get(); }
  const T* data() const { return data_.get(); }
  size_t size() const { return size_; }
  T& operator[](size_t i) { return data_[i]; }
  const T& operator[](size_t i) const { return data_[i]; }
  std::vector<T> copy() const { return std::vector<T>(data_.get(), data_.get() + size_); }

 private:
  std::unique_ptr<T[]> data_;
  size_t size_;
};

// Deterministic test data.
class Rng {
 public:
  explicit Rng(uint32_t seed) : engine_(seed) {}
  double uniform(double lo, double hi) { return std::uniform_real_distribution<double>(lo, hi)(engine_); }
  int below(int n) { return std::uniform_int_distribution<int>(0, n - 1)(engine_); }
  // +-[0.25, 2), or exactly 0 with probability zero_fraction: values whose products with the
  // tests' factors stay normal in every dtype, so relative tolerances hold.
  double value(double zero_fraction = 0.1) {
    if (uniform(0, 1) < zero_fraction) return 0.0;
    return (below(2) ? 1.0 : -1.0) * uniform(0.25, 2.0);
  }
  std::mt19937& engine() { return engine_; }

 private:
  std::mt19937 engine_;
};

// `numel` elements of `dtype`, starting `misalign` elements (0-7) into a heap allocation that
// ends at the last element. The elements before the start are a guard of NaN bytes: ASan
// poisons what of it its 8-byte granules allow, a norm that reads it becomes NaN, and
// guard_intact() says whether a kernel wrote into it. An empty tensor's data is the
// allocation's end, so any access to it is out of bounds.
class TensorBuffer {
 public:
  TensorBuffer(DType dtype, int64_t numel, int misalign);
  ~TensorBuffer();
  TensorBuffer(const TensorBuffer&) = delete;
  TensorBuffer& operator=(const TensorBuffer&) = delete;

  DType dtype() const { return dtype_; }
  int64_t numel() const { return numel_; }
  void* data() { return data_; }
  const void* data() const { return data_; }
  double get(int64_t i) const { return load_element(data_, dtype_, i); }
  void set(int64_t i, double value) { store_element(data_, dtype_, i, value); }
  std::vector<double> values() const;
  void fill(Rng& rng, double zero_fraction = 0.1);
  bool guard_intact() const;

 private:
  DType dtype_;
  int64_t numel_;
  size_t guard_bytes_;
  unsigned char* allocation_;
  void* data_;
};

struct TensorSpec {
  DType dtype;
  int64_t numel;
  int misalign;  // elements between the allocation's start and the tensor's
};

// A tensor list planned as common/list_plan.cpp's plan_tensor_list plans one (that needs torch):
// tensor i's ceil(numel / chunk_size) chunks follow tensor i-1's, in order. The TensorMeta and
// ChunkMeta arrays are exact-size heap arrays, as the kernels' "device memory".
class TestList {
 public:
  TestList(const std::vector<TensorSpec>& specs, int64_t chunk_size, Rng& rng);

  ChunkList list() const;
  size_t size() const { return tensors_.size(); }
  int32_t num_chunks() const { return static_cast<int32_t>(chunks_.size()); }
  TensorBuffer& tensor(size_t i) { return *tensors_[i]; }
  const TensorBuffer& tensor(size_t i) const { return *tensors_[i]; }
  bool any_double() const;
  DType promoted_dtype() const;  // torch's type promotion over the list's dtypes
  std::vector<std::vector<double>> values() const;
  // Every tensor's guard is untouched (records a failure naming `what` otherwise).
  void expect_guards_intact(const std::string& what) const;
  std::string describe() const;  // e.g. "[f32 x1 +1, f16 x7 +3]"

 private:
  std::vector<std::unique_ptr<TensorBuffer>> tensors_;
  ExactArray<TensorMeta> metas_;
  ExactArray<ChunkMeta> chunks_;
  int64_t chunk_size_;
};

// The lists the list kernels run on: awkward lengths and offsets, every dtype, an empty tensor,
// several chunks per tensor; one with chunks large enough for the kernels' unrolled vector loop,
// and one with no chunk at all.
struct ListCase {
  std::string name;
  std::vector<TensorSpec> specs;
  int64_t chunk_size;
};
std::vector<ListCase> list_cases();

// Grid sizes for a list: fewer blocks than chunks, and more.
std::vector<int> grids_for(int32_t num_chunks);

// A list's p-norm as torch defines it: per tensor, then the norm of those norms (for p = 0 the
// count of tensors that have a nonzero element), in double; a NaN wins the inf-norm's max. L2
// and general p are scaled by the largest magnitude, so grads of 1e30 or 1e-25 neither overflow
// nor underflow.
struct NormResult {
  std::vector<double> per_tensor;
  double total;
};
NormResult reference_norm(const std::vector<std::vector<double>>& tensors, double p);

// The norm kernel's scratch and outputs for `list`, each its own exact-size allocation (the CUDA
// host code carves them from one tensor), so an overrun of any of them is an ASan report.
// blocks_done starts zeroed, as the host's memset leaves it; zero it again before a relaunch.
struct NormBuffers {
  NormBuffers(const TestList& list, double p, bool per_tensor)
      : acc_dtype(list.any_double() ? DType::kFloat64 : DType::kFloat32),
        total_dtype(list.promoted_dtype()),
        chunk_partials(DType::kFloat64, list.num_chunks(), 0),
        contributions(DType::kFloat64, static_cast<int64_t>(list.size()), 0),
        per_tensor_norms(acc_dtype, per_tensor ? static_cast<int64_t>(list.size()) : 0, 0),
        total(total_dtype, 1, 0),
        accumulated_total(acc_dtype, 1, 0),
        blocks_done(1) {
    params.list = list.list();
    params.kind = norm_kind_for(p);
    params.p = p;
    params.acc_double = list.any_double();
    params.chunk_partials = chunk_partials.data();
    params.contributions = contributions.data();
    params.per_tensor_out = per_tensor ? per_tensor_norms.data() : nullptr;
    params.total_out = total.data();
    params.total_dtype = static_cast<int32_t>(total_dtype);
    params.blocks_done = blocks_done.data();
    params.accumulated_total_out = accumulated_total.data();
  }

  DType acc_dtype, total_dtype;
  TensorBuffer chunk_partials, contributions, per_tensor_norms, total, accumulated_total;
  ExactArray<unsigned int> blocks_done;
  NormParams params{};
};

// The parts of the self-test.
void test_norm_kernels();
void test_elementwise_kernels();
void test_agc_kernel();
void test_stats_kernels();
void test_clip_step_kernels();
void test_stable_spam_kernels();

}  // namespace selftest
}  // namespace fastclip
