#include "cpu_chunk_ops.h"

#include "cpu_loops.h"

namespace fastclip {
namespace cpu {
namespace {

#if defined(__x86_64__) && defined(__GNUC__)
#define FASTCLIP_HAVE_AVX2_VARIANT 1
#define FASTCLIP_TARGET_AVX2 __attribute__((target("avx2,fma,f16c")))
bool cpu_has_avx2() {
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                          __builtin_cpu_supports("f16c");
  return has;
}
#else
#define FASTCLIP_HAVE_AVX2_VARIANT 0
#endif

template <NormKind kind, typename acc_t>
FASTCLIP_ALWAYS_INLINE acc_t partial_by_dtype(const TensorMeta& meta, int64_t begin, int64_t n, acc_t p) {
  switch (static_cast<DType>(meta.dtype)) {
    case DType::kFloat32: return partial_of<kind>(static_cast<const float*>(meta.data) + begin, n, p);
    case DType::kFloat16: return partial_of<kind>(static_cast<const c10::Half*>(meta.data) + begin, n, p);
    case DType::kBFloat16: return partial_of<kind>(static_cast<const c10::BFloat16*>(meta.data) + begin, n, p);
    case DType::kFloat64: return partial_of<kind>(static_cast<const double*>(meta.data) + begin, n, p);
  }
  return acc_t(0);
}

template <typename acc_t>
FASTCLIP_ALWAYS_INLINE acc_t partial_by_kind(NormKind kind, const TensorMeta& meta, int64_t begin, int64_t n, acc_t p) {
  switch (kind) {
    case NormKind::kL2: return partial_by_dtype<NormKind::kL2>(meta, begin, n, p);
    case NormKind::kL1: return partial_by_dtype<NormKind::kL1>(meta, begin, n, p);
    case NormKind::kInf: return partial_by_dtype<NormKind::kInf>(meta, begin, n, p);
    case NormKind::kZero: return partial_by_dtype<NormKind::kZero>(meta, begin, n, p);
    case NormKind::kGeneral: return partial_by_dtype<NormKind::kGeneral>(meta, begin, n, p);
  }
  return acc_t(0);
}

FASTCLIP_ALWAYS_INLINE void scale_by_dtype(const TensorMeta& meta, int64_t begin, int64_t n, double coef) {
  switch (static_cast<DType>(meta.dtype)) {
    case DType::kFloat32: return scale_in_place(static_cast<float*>(meta.data) + begin, n, static_cast<float>(coef));
    case DType::kFloat16: return scale_in_place(static_cast<c10::Half*>(meta.data) + begin, n, static_cast<float>(coef));
    case DType::kBFloat16: return scale_in_place(static_cast<c10::BFloat16*>(meta.data) + begin, n, static_cast<float>(coef));
    case DType::kFloat64: return scale_in_place(static_cast<double*>(meta.data) + begin, n, coef);
  }
}

FASTCLIP_ALWAYS_INLINE void clamp_by_dtype(const TensorMeta& meta, int64_t begin, int64_t n, double bound) {
  switch (static_cast<DType>(meta.dtype)) {
    case DType::kFloat32: return clamp_in_place(static_cast<float*>(meta.data) + begin, n, static_cast<float>(bound));
    case DType::kFloat16: return clamp_in_place(static_cast<c10::Half*>(meta.data) + begin, n, static_cast<float>(bound));
    case DType::kBFloat16: return clamp_in_place(static_cast<c10::BFloat16*>(meta.data) + begin, n, static_cast<float>(bound));
    case DType::kFloat64: return clamp_in_place(static_cast<double*>(meta.data) + begin, n, bound);
  }
}

#if FASTCLIP_HAVE_AVX2_VARIANT
// The same templates instantiated inside AVX2 functions: GCC inlines them and vectorises for
// the wider ISA.
template <typename acc_t>
FASTCLIP_TARGET_AVX2 acc_t partial_by_kind_avx2(NormKind kind, const TensorMeta& meta, int64_t begin, int64_t n, acc_t p) {
  return partial_by_kind<acc_t>(kind, meta, begin, n, p);
}
FASTCLIP_TARGET_AVX2 void scale_by_dtype_avx2(const TensorMeta& meta, int64_t begin, int64_t n, double coef) {
  scale_by_dtype(meta, begin, n, coef);
}
FASTCLIP_TARGET_AVX2 void clamp_by_dtype_avx2(const TensorMeta& meta, int64_t begin, int64_t n, double bound) {
  clamp_by_dtype(meta, begin, n, bound);
}
#endif

template <typename acc_t>
acc_t dispatch_partial(NormKind kind, const TensorMeta& meta, int64_t begin, int64_t end, acc_t p) {
#if FASTCLIP_HAVE_AVX2_VARIANT
  if (cpu_has_avx2()) return partial_by_kind_avx2<acc_t>(kind, meta, begin, end - begin, p);
#endif
  return partial_by_kind<acc_t>(kind, meta, begin, end - begin, p);
}

}  // namespace

float chunk_partial(NormKind kind, const TensorMeta& meta, int64_t begin, int64_t end, float p) {
  return dispatch_partial<float>(kind, meta, begin, end, p);
}

double chunk_partial(NormKind kind, const TensorMeta& meta, int64_t begin, int64_t end, double p) {
  return dispatch_partial<double>(kind, meta, begin, end, p);
}

void chunk_scale(const TensorMeta& meta, int64_t begin, int64_t end, double coef) {
#if FASTCLIP_HAVE_AVX2_VARIANT
  if (cpu_has_avx2()) return scale_by_dtype_avx2(meta, begin, end - begin, coef);
#endif
  scale_by_dtype(meta, begin, end - begin, coef);
}

void chunk_clamp(const TensorMeta& meta, int64_t begin, int64_t end, double bound) {
#if FASTCLIP_HAVE_AVX2_VARIANT
  if (cpu_has_avx2()) return clamp_by_dtype_avx2(meta, begin, end - begin, bound);
#endif
  clamp_by_dtype(meta, begin, end - begin, bound);
}

}  // namespace cpu
}  // namespace fastclip
