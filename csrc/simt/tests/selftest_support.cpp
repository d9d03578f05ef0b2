#include "selftest.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "../runtime.h"
#include "../sanitizers.h"

#ifdef FASTCLIP_SIMT_ASAN
extern "C" void __asan_poison_memory_region(const volatile void* addr, size_t size);
extern "C" void __asan_unpoison_memory_region(const volatile void* addr, size_t size);
#endif

namespace fastclip {
namespace selftest {
namespace {

int checks = 0, failures = 0;

}  // namespace

void expect(bool ok, const std::string& what) {
  ++checks;
  if (ok) return;
  ++failures;
  std::fprintf(stderr, "FAILED: %s\n", what.c_str());
}

int failure_count() { return failures; }
int check_count() { return checks; }

void expect_launched(cudaError_t error, const std::string& what) {
  expect(error == cudaSuccess, what + ": launch failed: " + simt::last_error_message());
}

double tolerance(DType dtype) {
  switch (dtype) {
    case DType::kFloat32: return 1e-5;     // 2^-24 per rounding
    case DType::kFloat16: return 2e-3;     // 2^-11
    case DType::kBFloat16: return 1.6e-2;  // 2^-8
    case DType::kFloat64: return 1e-12;    // 2^-53
  }
  std::abort();
}

double tolerance(std::initializer_list<DType> dtypes) {
  double loosest = 0;
  for (DType dtype : dtypes) loosest = std::max(loosest, tolerance(dtype));
  return loosest;
}

bool close(double actual, double expected, double rtol) {
  if (std::isnan(expected) || std::isnan(actual)) return std::isnan(expected) && std::isnan(actual);
  if (std::isinf(expected) || std::isinf(actual)) return actual == expected;
  return std::fabs(actual - expected) <= rtol * std::fabs(expected);
}

const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::kFloat32: return "f32";
    case DType::kFloat16: return "f16";
    case DType::kBFloat16: return "bf16";
    case DType::kFloat64: return "f64";
  }
  return "?";
}

std::string describe(double actual, double expected) {
  char text[96];
  std::snprintf(text, sizeof text, "got %.17g, expected %.17g", actual, expected);
  return text;
}

double load_element(const void* data, DType dtype, int64_t i) {
  switch (dtype) {
    case DType::kFloat32: return static_cast<const float*>(data)[i];
    case DType::kFloat16: return __half2float(static_cast<const __half*>(data)[i]);
    case DType::kBFloat16: return __bfloat162float(static_cast<const __nv_bfloat16*>(data)[i]);
    case DType::kFloat64: return static_cast<const double*>(data)[i];
  }
  std::abort();
}

void store_element(void* data, DType dtype, int64_t i, double value) {
  switch (dtype) {
    case DType::kFloat32: static_cast<float*>(data)[i] = static_cast<float>(value); return;
    case DType::kFloat16: static_cast<__half*>(data)[i] = __float2half_rn(static_cast<float>(value)); return;
    case DType::kBFloat16:
      static_cast<__nv_bfloat16*>(data)[i] = __float2bfloat16_rn(static_cast<float>(value));
      return;
    case DType::kFloat64: static_cast<double*>(data)[i] = value; return;
  }
  std::abort();
}

TensorBuffer::TensorBuffer(DType dtype, int64_t numel, int misalign)
    : dtype_(dtype),
      numel_(numel),
      guard_bytes_(static_cast<size_t>(misalign * dtype_size(static_cast<int32_t>(dtype)))) {
  const size_t bytes = guard_bytes_ + static_cast<size_t>(numel * dtype_size(static_cast<int32_t>(dtype)));
  allocation_ = static_cast<unsigned char*>(std::malloc(bytes == 0 ? 1 : bytes));  // malloc: 16-byte aligned
  if (allocation_ == nullptr) std::abort();
  std::memset(allocation_, 0xff, guard_bytes_);  // all-ones: a NaN in every dtype
  data_ = allocation_ + guard_bytes_;
#ifdef FASTCLIP_SIMT_ASAN
  __asan_poison_memory_region(allocation_, guard_bytes_);
#endif
}

TensorBuffer::~TensorBuffer() {
#ifdef FASTCLIP_SIMT_ASAN
  __asan_unpoison_memory_region(allocation_, guard_bytes_);
#endif
  std::free(allocation_);
}

std::vector<double> TensorBuffer::values() const {
  std::vector<double> out(static_cast<size_t>(numel_));
  for (int64_t i = 0; i < numel_; ++i) out[i] = get(i);
  return out;
}

void TensorBuffer::fill(Rng& rng, double zero_fraction) {
  for (int64_t i = 0; i < numel_; ++i) set(i, rng.value(zero_fraction));
}

bool TensorBuffer::guard_intact() const {
#ifdef FASTCLIP_SIMT_ASAN
  __asan_unpoison_memory_region(allocation_, guard_bytes_);
#endif
  bool intact = true;
  for (size_t i = 0; i < guard_bytes_; ++i) intact = intact && allocation_[i] == 0xff;
#ifdef FASTCLIP_SIMT_ASAN
  __asan_poison_memory_region(allocation_, guard_bytes_);
#endif
  return intact;
}

TestList::TestList(const std::vector<TensorSpec>& specs, int64_t chunk_size, Rng& rng) : chunk_size_(chunk_size) {
  std::vector<TensorMeta> metas;
  std::vector<ChunkMeta> chunks;
  for (const TensorSpec& spec : specs) {
    tensors_.push_back(std::make_unique<TensorBuffer>(spec.dtype, spec.numel, spec.misalign));
    TensorBuffer& t = *tensors_.back();
    t.fill(rng);
    const int32_t index = static_cast<int32_t>(metas.size());
    metas.push_back(
        TensorMeta{t.data(), spec.numel, static_cast<int32_t>(spec.dtype), static_cast<int32_t>(chunks.size())});
    for (int64_t c = 0; c * chunk_size < spec.numel; ++c) chunks.push_back(ChunkMeta{index, static_cast<int32_t>(c)});
  }
  metas_ = ExactArray<TensorMeta>(metas);
  chunks_ = ExactArray<ChunkMeta>(chunks);
}

ChunkList TestList::list() const {
  return ChunkList{metas_.data(), chunks_.data(), static_cast<int32_t>(metas_.size()), num_chunks(), chunk_size_};
}

bool TestList::any_double() const {
  for (const auto& t : tensors_) {
    if (t->dtype() == DType::kFloat64) return true;
  }
  return false;
}

DType TestList::promoted_dtype() const {
  if (any_double()) return DType::kFloat64;
  for (const auto& t : tensors_) {
    if (t->dtype() != tensors_[0]->dtype()) return DType::kFloat32;  // f16 with bf16 promotes to f32 too
  }
  return tensors_[0]->dtype();
}

std::vector<std::vector<double>> TestList::values() const {
  std::vector<std::vector<double>> out;
  for (const auto& t : tensors_) out.push_back(t->values());
  return out;
}

void TestList::expect_guards_intact(const std::string& what) const {
  for (size_t i = 0; i < tensors_.size(); ++i) {
    expect(tensors_[i]->guard_intact(), what + ": wrote before the start of tensor " + std::to_string(i));
  }
}

std::string TestList::describe() const {
  std::string out = "[";
  for (size_t i = 0; i < tensors_.size(); ++i) {
    if (i) out += ", ";
    out += std::string(dtype_name(tensors_[i]->dtype())) + " x" + std::to_string(tensors_[i]->numel());
  }
  return out + "] chunk " + std::to_string(chunk_size_);
}

std::vector<ListCase> list_cases() {
  using D = DType;
  return {
      // Lengths around the 16-byte vectors (1, 7, 8, 9, 33 elements), starts 1-7 elements off,
      // an empty tensor, several 64-element chunks per tensor; a float64 tensor makes the norm
      // accumulate in double.
      {"mixed, with float64",
       {{D::kFloat32, 1, 1},
        {D::kFloat16, 7, 3},
        {D::kBFloat16, 8, 5},
        {D::kFloat64, 9, 1},
        {D::kFloat32, 33, 7},
        {D::kFloat16, 0, 2},
        {D::kFloat32, 64, 0},
        {D::kBFloat16, 65, 6},
        {D::kFloat16, 200, 4},
        {D::kFloat64, 129, 1}},
       64},
      {"mixed 16-bit and float32",
       {{D::kBFloat16, 9, 2},
        {D::kFloat32, 7, 5},
        {D::kFloat16, 33, 1},
        {D::kFloat32, 0, 3},
        {D::kFloat16, 130, 7},
        {D::kBFloat16, 1, 1},
        {D::kFloat32, 191, 2}},
       64},
      {"float16 only", {{D::kFloat16, 8, 0}, {D::kFloat16, 1, 5}, {D::kFloat16, 0, 0}, {D::kFloat16, 150, 3}}, 64},
      {"bfloat16 only", {{D::kBFloat16, 33, 7}, {D::kBFloat16, 64, 1}, {D::kBFloat16, 7, 0}}, 64},
      // Chunks of 8192 elements: 512 threads get four vectors each, the kernels' unrolled loop.
      {"long tensors",
       {{D::kFloat32, 8192 + 5, 3}, {D::kFloat16, 16384 + 9, 1}, {D::kFloat64, 9001, 1}, {D::kBFloat16, 8199, 7}},
       8192},
      {"one empty tensor", {{D::kFloat32, 0, 1}}, 64},
  };
}

std::vector<int> grids_for(int32_t num_chunks) { return {2, num_chunks + 3}; }

namespace {

// (sum |x|^q)^(1/q) over v as m (sum (|x| / m)^q)^(1/q), m the largest |x|: no power overflows
// or underflows to a loss, whatever the magnitudes (1e30, 1e-25). 0 for no or only zero
// values, NaN where one is NaN, else inf where one is infinite.
double scaled_norm(const std::vector<double>& v, double q) {
  double m = 0;
  for (double x : v) m = nan_max(m, std::fabs(x));
  if (m == 0 || !std::isfinite(m)) return m;
  double sum = 0;
  for (double x : v) sum += std::pow(std::fabs(x) / m, q);
  return m * std::pow(sum, 1 / q);
}

}  // namespace

NormResult reference_norm(const std::vector<std::vector<double>>& tensors, double p) {
  const NormKind kind = norm_kind_for(p);
  const double q = kind == NormKind::kL2 ? 2.0 : p;  // the power of L2 and general p
  NormResult out;
  for (const std::vector<double>& values : tensors) {
    double norm = 0;
    switch (kind) {
      case NormKind::kL2:
      case NormKind::kGeneral: norm = scaled_norm(values, q); break;
      case NormKind::kL1:
        for (double x : values) norm += std::fabs(x);
        break;
      case NormKind::kInf:
        for (double x : values) norm = nan_max(norm, std::fabs(x));
        break;
      case NormKind::kZero:
        for (double x : values) norm += x != 0;
        break;
    }
    out.per_tensor.push_back(norm);
  }
  // The norm of the per-tensor norms (for p = 0, the count of nonzero ones).
  out.total = 0;
  switch (kind) {
    case NormKind::kL2:
    case NormKind::kGeneral: out.total = scaled_norm(out.per_tensor, q); break;
    case NormKind::kL1:
      for (double norm : out.per_tensor) out.total += norm;
      break;
    case NormKind::kInf:
      for (double norm : out.per_tensor) out.total = nan_max(out.total, norm);
      break;
    case NormKind::kZero:
      for (double norm : out.per_tensor) out.total += norm != 0;
      break;
  }
  return out;
}

}  // namespace selftest
}  // namespace fastclip
