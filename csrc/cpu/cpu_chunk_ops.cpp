#include "cpu_chunk_ops.h"

#include <cstdlib>
#include <string>
#include <type_traits>

#include "cpu_isa.h"
#include "cpu_loops.h"
#include "cpu_parallel.h"

namespace fastclip {
namespace cpu {

namespace {

// Each loop is one always-inline body over visit_dtype (cpu_loops.h), instantiated per instruction
// set: GenericIsa's is the baseline variant; Avx2Isa's and Avx512Isa's are inlined into functions
// compiled for their targets (the *_avx2 and *_avx512 wrappers below), and add explicit loops
// (the overloads on their tags) where GCC's own vectorisation falls short: half precision, the
// L2 pair.
struct GenericIsa {
  static constexpr bool kExplicitLoops = false;
};
struct Avx2Isa {
  static constexpr bool kExplicitLoops = true;
};
struct Avx512Isa {
  static constexpr bool kExplicitLoops = true;
};

template <typename scalar_t>
constexpr bool is_half = std::is_same_v<scalar_t, c10::Half> || std::is_same_v<scalar_t, c10::BFloat16>;

// One functor per operation, with the scalar, AVX2 and AVX-512 forms side by side.
struct MulBy {
  float coef;
  float operator()(float v) const { return v * coef; }
#if FASTCLIP_HAVE_AVX2_VARIANT
  FASTCLIP_TARGET_AVX2 __m256 operator()(__m256 v) const { return _mm256_mul_ps(v, _mm256_set1_ps(coef)); }
  FASTCLIP_TARGET_AVX512 __m512 operator()(__m512 v) const { return _mm512_mul_ps(v, _mm512_set1_ps(coef)); }
#endif
};
struct ClampTo {
  float bound;
  // Same select order as clamp_symmetric, so a NaN passes through unchanged.
  float operator()(float v) const { return clamp_symmetric(v, bound); }
#if FASTCLIP_HAVE_AVX2_VARIANT
  FASTCLIP_TARGET_AVX2 __m256 operator()(__m256 v) const {
    const __m256 hi = _mm256_set1_ps(bound), lo = _mm256_set1_ps(-bound);
    v = _mm256_blendv_ps(v, hi, _mm256_cmp_ps(v, hi, _CMP_GT_OQ));
    return _mm256_blendv_ps(v, lo, _mm256_cmp_ps(v, lo, _CMP_LT_OQ));
  }
  FASTCLIP_TARGET_AVX512 __m512 operator()(__m512 v) const {
    const __m512 hi = _mm512_set1_ps(bound), lo = _mm512_set1_ps(-bound);
    v = _mm512_mask_mov_ps(v, _mm512_cmp_ps_mask(v, hi, _CMP_GT_OQ), hi);
    return _mm512_mask_mov_ps(v, _mm512_cmp_ps_mask(v, lo, _CMP_LT_OQ), lo);
  }
#endif
};

// The partial of meta's [begin, begin + n): partial_of for its dtype.
template <NormKind kind, typename acc_t>
FASTCLIP_ALWAYS_INLINE acc_t partial_by_dtype(const TensorMeta& meta, int64_t begin, int64_t n, acc_t p) {
  return visit_dtype(meta, begin, [&](auto x) FASTCLIP_INLINE_LAMBDA { return partial_of<kind>(x, n, p); });
}

// The same for `kind`, or for float16 L2 and L1 partials in float the ISA's explicit loop
// (half_partial). That case is tested before the dtype visit: within it, GCC 12 left the AVX-512
// variant's bfloat16 L1 loop unvectorised (7x slower).
template <typename Isa, typename acc_t>
FASTCLIP_ALWAYS_INLINE acc_t partial_by_kind(NormKind kind, const TensorMeta& meta, int64_t begin, int64_t n, acc_t p) {
  if constexpr (Isa::kExplicitLoops && std::is_same_v<acc_t, float>) {
    if (static_cast<DType>(meta.dtype) == DType::kFloat16 && (kind == NormKind::kL2 || kind == NormKind::kL1)) {
      const c10::Half* x = static_cast<const c10::Half*>(meta.data) + begin;
      return kind == NormKind::kL2 ? half_partial<NormKind::kL2>(Isa{}, x, n, p)
                                   : half_partial<NormKind::kL1>(Isa{}, x, n, p);
    }
  }
  switch (kind) {
    case NormKind::kL2: return partial_by_dtype<NormKind::kL2>(meta, begin, n, p);
    case NormKind::kL1: return partial_by_dtype<NormKind::kL1>(meta, begin, n, p);
    case NormKind::kInf: return partial_by_dtype<NormKind::kInf>(meta, begin, n, p);
    case NormKind::kZero: return partial_by_dtype<NormKind::kZero>(meta, begin, n, p);
    case NormKind::kGeneral: return partial_by_dtype<NormKind::kGeneral>(meta, begin, n, p);
  }
  return acc_t(0);
}

// In place over meta's [begin, begin + n): for float16 and bfloat16 the ISA's explicit loop
// (half_in_place) applying `op` (MulBy, ClampTo); else plain(x), cpu_loops.h's loop.
template <typename Isa, typename Op, typename Plain>
FASTCLIP_ALWAYS_INLINE void in_place_by_dtype(const TensorMeta& meta, int64_t begin, int64_t n, const Op& op,
                                              const Plain& plain) {
  visit_dtype(meta, begin, [&](auto x) FASTCLIP_INLINE_LAMBDA {
    if constexpr (Isa::kExplicitLoops && is_half<scalar_of<decltype(x)>>) {
      half_in_place(Isa{}, x, n, op);
    } else {
      plain(x);
    }
  });
}

template <typename Isa>
FASTCLIP_ALWAYS_INLINE void scale_by_dtype(const TensorMeta& meta, int64_t begin, int64_t n, double coef) {
  in_place_by_dtype<Isa>(meta, begin, n, MulBy{static_cast<float>(coef)}, [&](auto x) FASTCLIP_INLINE_LAMBDA {
    scale_in_place(x, n, static_cast<opmath_of<scalar_of<decltype(x)>>>(coef));
  });
}

template <typename Isa>
FASTCLIP_ALWAYS_INLINE void clamp_by_dtype(const TensorMeta& meta, int64_t begin, int64_t n, double bound) {
  in_place_by_dtype<Isa>(meta, begin, n, ClampTo{static_cast<float>(bound)}, [&](auto x) FASTCLIP_INLINE_LAMBDA {
    clamp_in_place(x, n, static_cast<opmath_of<scalar_of<decltype(x)>>>(bound));
  });
}

// The float L2 partials of a's [a_begin, a_begin + n) and b's [b_begin, b_begin + n), of one
// dtype, in one loop (l2_pair); false for float64, which has none.
template <typename Isa>
FASTCLIP_ALWAYS_INLINE bool l2_pair_by_dtype(const TensorMeta& a, int64_t a_begin, const TensorMeta& b, int64_t b_begin,
                                             int64_t n, float p, float* out) {
  return visit_dtype(a, a_begin, [&](auto x) FASTCLIP_INLINE_LAMBDA {
    using scalar_t = scalar_of<decltype(x)>;
    if constexpr (std::is_same_v<scalar_t, double>) {
      return false;
    } else {
      l2_pair(Isa{}, x, static_cast<const scalar_t*>(b.data) + b_begin, n, p, out);
      return true;
    }
  });
}

FASTCLIP_ALWAYS_INLINE bool all_zero_by_dtype(const TensorMeta& meta, int64_t begin, int64_t n) {
  return visit_dtype(meta, begin, [&](auto x) FASTCLIP_INLINE_LAMBDA { return all_zero(x, n); });
}

#if FASTCLIP_HAVE_AVX2_VARIANT
// Eight half-precision values to and from float: the same rounding as cpu_loops.h's scalar
// conversions (round to nearest even; a NaN stays a quiet NaN), so both paths agree bit for bit.
FASTCLIP_TARGET_AVX2 inline __m256 load8(const c10::BFloat16* p) {
  const __m128i bits = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(bits), 16));
}
// Eight floats rounded to bfloat16, each in the low half of a 32-bit lane.
FASTCLIP_TARGET_AVX2 inline __m256i bf16_bits_of(__m256 v) {
  const __m256i bits = _mm256_castps_si256(v);
  const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(bits, 16), _mm256_set1_epi32(1));
  const __m256i rounded =
      _mm256_srli_epi32(_mm256_add_epi32(_mm256_add_epi32(bits, _mm256_set1_epi32(0x7FFF)), lsb), 16);
  const __m256 is_nan = _mm256_cmp_ps(v, v, _CMP_UNORD_Q);
  return _mm256_blendv_epi8(rounded, _mm256_set1_epi32(0x7FC0), _mm256_castps_si256(is_nan));
}
FASTCLIP_TARGET_AVX2 inline void store8(c10::BFloat16* p, __m256 v) {
  const __m256i rounded = bf16_bits_of(v);
  const __m128i packed = _mm_packus_epi32(_mm256_castsi256_si128(rounded), _mm256_extracti128_si256(rounded, 1));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(p), packed);
}
// Sixteen bfloat16 as two float vectors in a lane-interleaved order that store16_interleaved undoes: the
// word unpacks put each value in the high half of a 32-bit lane (its float bits) and the
// saturating pack puts it back, with no cross-lane shuffle. Only for element-wise operations.
FASTCLIP_TARGET_AVX2 inline void load16_interleaved(const c10::BFloat16* p, __m256* a, __m256* b) {
  const __m256i bits = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  const __m256i zero = _mm256_setzero_si256();
  *a = _mm256_castsi256_ps(_mm256_unpacklo_epi16(zero, bits));
  *b = _mm256_castsi256_ps(_mm256_unpackhi_epi16(zero, bits));
}
FASTCLIP_TARGET_AVX2 inline void store16_interleaved(c10::BFloat16* p, __m256 a, __m256 b) {
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm256_packus_epi32(bf16_bits_of(a), bf16_bits_of(b)));
}
FASTCLIP_TARGET_AVX2 inline __m256 load8(const c10::Half* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
FASTCLIP_TARGET_AVX2 inline void store8(c10::Half* p, __m256 v) {
  _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}

template <typename half_t, typename Op>
FASTCLIP_TARGET_AVX2 void half_in_place(Avx2Isa, half_t* x, int64_t n, const Op& op) {
  int64_t i = 0;
  if constexpr (std::is_same_v<half_t, c10::BFloat16>) {
    for (; i + 16 <= n; i += 16) {
      __m256 a, b;
      load16_interleaved(x + i, &a, &b);
      store16_interleaved(x + i, op(a), op(b));
    }
  }
  for (; i + 8 <= n; i += 8) store8(x + i, op(load8(x + i)));
  for (; i < n; ++i) store_from_opmath(x + i, op(load_opmath<float>(x + i)));
}

// Sixteen at a time with AVX-512, same rounding again.
FASTCLIP_TARGET_AVX512 inline __m512 load16(const c10::BFloat16* p) {
  const __m256i bits = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(bits), 16));
}
FASTCLIP_TARGET_AVX512 inline void store16(c10::BFloat16* p, __m512 v) {
  const __m512i bits = _mm512_castps_si512(v);
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(1));
  __m512i rounded = _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(bits, _mm512_set1_epi32(0x7FFF)), lsb), 16);
  rounded = _mm512_mask_mov_epi32(rounded, _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q), _mm512_set1_epi32(0x7FC0));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtepi32_epi16(rounded));
}
FASTCLIP_TARGET_AVX512 inline __m512 load16(const c10::Half* p) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}
FASTCLIP_TARGET_AVX512 inline void store16(c10::Half* p, __m512 v) {
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}

template <typename half_t, typename Op>
FASTCLIP_TARGET_AVX512 void half_in_place(Avx512Isa, half_t* x, int64_t n, const Op& op) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) store16(x + i, op(load16(x + i)));
  for (; i < n; ++i) store_from_opmath(x + i, op(load_opmath<float>(x + i)));
}

// float16 L2 and L1 partials with the hardware conversion (GCC 12 converts _Float16 one element
// at a time even where it vectorises the rest, which made the fp16 norm three times the bf16
// one). The same kLanes lanes in the same order as partial_of, which finishes them, and the same
// arithmetic as GCC makes of partial_of in these FMA-enabled variants (lane + x * x contracted
// into one fused multiply-add): the same bits.
template <NormKind kind>
FASTCLIP_TARGET_AVX2 inline __m256 add_lane_element(__m256 lanes, __m256 v) {
  if constexpr (kind == NormKind::kL2) return _mm256_fmadd_ps(v, v, lanes);
  const __m256 zero = _mm256_setzero_ps();  // L1: x < 0 ? -x : x, NaN kept (norm_element)
  return _mm256_add_ps(lanes, _mm256_blendv_ps(v, _mm256_sub_ps(zero, v), _mm256_cmp_ps(v, zero, _CMP_LT_OQ)));
}
template <NormKind kind>
FASTCLIP_TARGET_AVX512 inline __m512 add_lane_element(__m512 lanes, __m512 v) {
  if constexpr (kind == NormKind::kL2) return _mm512_fmadd_ps(v, v, lanes);
  const __m512 zero = _mm512_setzero_ps();
  return _mm512_add_ps(lanes, _mm512_mask_sub_ps(v, _mm512_cmp_ps_mask(v, zero, _CMP_LT_OQ), zero, v));
}

static_assert(kLanes == 16, "the float16 loops below fill sixteen lanes");

template <NormKind kind>
FASTCLIP_TARGET_AVX2 float half_partial(Avx2Isa, const c10::Half* x, int64_t n, float p) {
  __m256 low = _mm256_setzero_ps(), high = _mm256_setzero_ps();  // lanes 0-7 and 8-15
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    low = add_lane_element<kind>(low, load8(x + i));
    high = add_lane_element<kind>(high, load8(x + i + 8));
  }
  float lanes[kLanes];
  _mm256_storeu_ps(lanes, low);
  _mm256_storeu_ps(lanes + 8, high);
  return finish_partial<kind>(lanes, x, i, n, p);
}

template <NormKind kind>
FASTCLIP_TARGET_AVX512 float half_partial(Avx512Isa, const c10::Half* x, int64_t n, float p) {
  __m512 sum = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) sum = add_lane_element<kind>(sum, load16(x + i));
  float lanes[kLanes];
  _mm512_storeu_ps(lanes, sum);
  return finish_partial<kind>(lanes, x, i, n, p);
}

// The L2 partials of two chunks of one dtype and length in one loop. A chunk's 16 lanes are one
// chain of fused multiply-adds, bound by their latency rather than by memory; two chunks' chains
// overlap. Each chunk gets exactly its single-chunk arithmetic (the lanes GCC vectorises
// partial_of into, with lane + x * x fused, or the float16 loops above, then finish_partial), so
// pairing never changes a bit. Written with intrinsics: GCC does not vectorise two chains at once.
FASTCLIP_TARGET_AVX2 inline __m256 load8(const float* p) { return _mm256_loadu_ps(p); }
FASTCLIP_TARGET_AVX512 inline __m512 load16(const float* p) { return _mm512_loadu_ps(p); }

template <typename scalar_t>
FASTCLIP_TARGET_AVX2 void l2_pair(Avx2Isa, const scalar_t* a, const scalar_t* b, int64_t n, float p, float* out) {
  __m256 a_low = _mm256_setzero_ps(), a_high = _mm256_setzero_ps();
  __m256 b_low = _mm256_setzero_ps(), b_high = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    a_low = add_lane_element<NormKind::kL2>(a_low, load8(a + i));
    b_low = add_lane_element<NormKind::kL2>(b_low, load8(b + i));
    a_high = add_lane_element<NormKind::kL2>(a_high, load8(a + i + 8));
    b_high = add_lane_element<NormKind::kL2>(b_high, load8(b + i + 8));
  }
  float lanes_a[kLanes], lanes_b[kLanes];
  _mm256_storeu_ps(lanes_a, a_low);
  _mm256_storeu_ps(lanes_a + 8, a_high);
  _mm256_storeu_ps(lanes_b, b_low);
  _mm256_storeu_ps(lanes_b + 8, b_high);
  out[0] = finish_partial<NormKind::kL2>(lanes_a, a, i, n, p);
  out[1] = finish_partial<NormKind::kL2>(lanes_b, b, i, n, p);
}

template <typename scalar_t>
FASTCLIP_TARGET_AVX512 void l2_pair(Avx512Isa, const scalar_t* a, const scalar_t* b, int64_t n, float p, float* out) {
  __m512 sum_a = _mm512_setzero_ps(), sum_b = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    sum_a = add_lane_element<NormKind::kL2>(sum_a, load16(a + i));
    sum_b = add_lane_element<NormKind::kL2>(sum_b, load16(b + i));
  }
  float lanes_a[kLanes], lanes_b[kLanes];
  _mm512_storeu_ps(lanes_a, sum_a);
  _mm512_storeu_ps(lanes_b, sum_b);
  out[0] = finish_partial<NormKind::kL2>(lanes_a, a, i, n, p);
  out[1] = finish_partial<NormKind::kL2>(lanes_b, b, i, n, p);
}

// The variants: the loops above compiled for each instruction set.
template <typename acc_t>
FASTCLIP_TARGET_AVX512 acc_t partial_by_kind_avx512(NormKind kind, const TensorMeta& meta, int64_t begin, int64_t n,
                                                    acc_t p) {
  return partial_by_kind<Avx512Isa>(kind, meta, begin, n, p);
}
template <typename acc_t>
FASTCLIP_TARGET_AVX2 acc_t partial_by_kind_avx2(NormKind kind, const TensorMeta& meta, int64_t begin, int64_t n,
                                                acc_t p) {
  return partial_by_kind<Avx2Isa>(kind, meta, begin, n, p);
}
FASTCLIP_TARGET_AVX512 void scale_by_dtype_avx512(const TensorMeta& meta, int64_t begin, int64_t n, double coef) {
  scale_by_dtype<Avx512Isa>(meta, begin, n, coef);
}
FASTCLIP_TARGET_AVX2 void scale_by_dtype_avx2(const TensorMeta& meta, int64_t begin, int64_t n, double coef) {
  scale_by_dtype<Avx2Isa>(meta, begin, n, coef);
}
FASTCLIP_TARGET_AVX512 void clamp_by_dtype_avx512(const TensorMeta& meta, int64_t begin, int64_t n, double bound) {
  clamp_by_dtype<Avx512Isa>(meta, begin, n, bound);
}
FASTCLIP_TARGET_AVX2 void clamp_by_dtype_avx2(const TensorMeta& meta, int64_t begin, int64_t n, double bound) {
  clamp_by_dtype<Avx2Isa>(meta, begin, n, bound);
}
FASTCLIP_TARGET_AVX512 bool l2_pair_by_dtype_avx512(const TensorMeta& a, int64_t a_begin, const TensorMeta& b,
                                                    int64_t b_begin, int64_t n, float p, float* out) {
  return l2_pair_by_dtype<Avx512Isa>(a, a_begin, b, b_begin, n, p, out);
}
FASTCLIP_TARGET_AVX2 bool l2_pair_by_dtype_avx2(const TensorMeta& a, int64_t a_begin, const TensorMeta& b,
                                                int64_t b_begin, int64_t n, float p, float* out) {
  return l2_pair_by_dtype<Avx2Isa>(a, a_begin, b, b_begin, n, p, out);
}
FASTCLIP_TARGET_AVX512 bool all_zero_avx512(const TensorMeta& meta, int64_t begin, int64_t n) {
  return all_zero_by_dtype(meta, begin, n);
}
FASTCLIP_TARGET_AVX2 bool all_zero_avx2(const TensorMeta& meta, int64_t begin, int64_t n) {
  return all_zero_by_dtype(meta, begin, n);
}
#endif

// The baseline variants.
template <typename acc_t>
acc_t partial_by_kind_generic(NormKind kind, const TensorMeta& meta, int64_t begin, int64_t n, acc_t p) {
  return partial_by_kind<GenericIsa>(kind, meta, begin, n, p);
}
void scale_by_dtype_generic(const TensorMeta& meta, int64_t begin, int64_t n, double coef) {
  scale_by_dtype<GenericIsa>(meta, begin, n, coef);
}
void clamp_by_dtype_generic(const TensorMeta& meta, int64_t begin, int64_t n, double bound) {
  clamp_by_dtype<GenericIsa>(meta, begin, n, bound);
}

bool chunk_all_zero(const TensorMeta& meta, int64_t begin, int64_t end) {
  return FASTCLIP_BY_ISA(all_zero_by_dtype, all_zero_avx2, all_zero_avx512, meta, begin, end - begin);
}

template <typename acc_t>
acc_t dispatch_partial(NormKind kind, const TensorMeta& meta, int64_t begin, int64_t end, acc_t p) {
  return FASTCLIP_BY_ISA(partial_by_kind_generic<acc_t>, partial_by_kind_avx2<acc_t>, partial_by_kind_avx512<acc_t>,
                         kind, meta, begin, end - begin, p);
}

}  // namespace

float chunk_partial(NormKind kind, const TensorMeta& meta, int64_t begin, int64_t end, float p) {
  return dispatch_partial<float>(kind, meta, begin, end, p);
}

bool chunk_partial_pair(NormKind kind, const TensorMeta& a, int64_t a_begin, const TensorMeta& b, int64_t b_begin,
                        int64_t n, float p, float* out) {
  if (kind != NormKind::kL2 || a.dtype != b.dtype) return false;
  const auto no_generic_loop = [](auto&&...) { return false; };
  return FASTCLIP_BY_ISA(no_generic_loop, l2_pair_by_dtype_avx2, l2_pair_by_dtype_avx512, a, a_begin, b, b_begin, n, p,
                         out);
}

namespace {

double scaled_power_sum_by_dtype(const TensorMeta& meta, int64_t begin, int64_t n, double m, double p) {
  return visit_dtype(meta, begin, [&](auto x) FASTCLIP_INLINE_LAMBDA { return scaled_power_sum(x, n, m, p); });
}

template <NormKind kind, typename acc_t>
double partial_from_sum_of(const TensorMeta& meta, int64_t begin, int64_t end, double p, acc_t sum) {
  if (!needs_wide_partial<kind>(sum, meta.dtype)) {
    return partial_of_sum<kind>(sum);
  }
  if constexpr (kind == NormKind::kL2) {
    if (sum == acc_t(0) && chunk_all_zero(meta, begin, end)) return 0.0;  // a cheap integer pass
    return dispatch_partial<double>(NormKind::kL2, meta, begin, end, 2.0);
  } else {
    const double m = dispatch_partial<double>(NormKind::kInf, meta, begin, end, p);
    const bool scalable = m > 0.0 && m - m == 0.0;
    return general_partial_of_scaled(m, scalable ? scaled_power_sum_by_dtype(meta, begin, end - begin, m, p) : 0.0, p);
  }
}

template <typename acc_t>
double partial_from_sum_by_kind(NormKind kind, const TensorMeta& meta, int64_t begin, int64_t end, double p,
                                acc_t sum) {
  switch (kind) {
    case NormKind::kL2: return partial_from_sum_of<NormKind::kL2>(meta, begin, end, p, sum);
    case NormKind::kGeneral: return partial_from_sum_of<NormKind::kGeneral>(meta, begin, end, p, sum);
    default: return static_cast<double>(sum);
  }
}

}  // namespace

double partial_from_sum(NormKind kind, const TensorMeta& meta, int64_t begin, int64_t end, double p, float sum) {
  return partial_from_sum_by_kind(kind, meta, begin, end, p, sum);
}

double partial_from_sum(NormKind kind, const TensorMeta& meta, int64_t begin, int64_t end, double p, double sum) {
  return partial_from_sum_by_kind(kind, meta, begin, end, p, sum);
}

double chunk_partial(NormKind kind, const TensorMeta& meta, int64_t begin, int64_t end, double p) {
  return dispatch_partial<double>(kind, meta, begin, end, p);
}

void chunk_scale(const TensorMeta& meta, int64_t begin, int64_t end, double coef) {
  return FASTCLIP_BY_ISA(scale_by_dtype_generic, scale_by_dtype_avx2, scale_by_dtype_avx512, meta, begin, end - begin,
                         coef);
}

void chunk_clamp(const TensorMeta& meta, int64_t begin, int64_t end, double bound) {
  return FASTCLIP_BY_ISA(clamp_by_dtype_generic, clamp_by_dtype_avx2, clamp_by_dtype_avx512, meta, begin, end - begin,
                         bound);
}

}  // namespace cpu
}  // namespace fastclip
