// The CPU inner loops. They are written as independent lanes so that the compiler vectorises
// them without reassociating floating point: the result is the same bits whatever the ISA's
// vector width, and the same on every run.
#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>

#include "../common/norm_math.h"
#include "../common/tensor_list.h"

namespace fastclip {
namespace cpu {

constexpr int kLanes = 16;

// Forced inlining lets an AVX2 caller re-vectorise these loops for its own ISA.
#define FASTCLIP_ALWAYS_INLINE inline __attribute__((always_inline))

// The same for a lambda, such as those given to visit_dtype: a lambda does not take the target
// of the function it is written in (cpu_isa.h's variants), so one that GCC leaves out of line
// runs its loop compiled for the baseline ISA.
#define FASTCLIP_INLINE_LAMBDA __attribute__((always_inline))

// The arithmetic type of the loops for elements of scalar_t: double for float64, else float.
template <typename scalar_t>
using opmath_of = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;

// The element type behind a pointer visit_dtype passes.
template <typename Pointer>
using scalar_of = std::remove_const_t<std::remove_pointer_t<Pointer>>;

// The one dispatch over a tensor's dtype in the CPU loops: fn(x), x pointing to element `begin`
// of `meta` as its C++ type (float, c10::Half, c10::BFloat16 or double). Pass a
// FASTCLIP_INLINE_LAMBDA, so that the loop is compiled for the caller's instruction set. (Every
// case returns from within the switch: with the float32 case after it, GCC 12 left the AVX-512
// variant's bfloat16 L1 norm unvectorised, 7x slower.)
template <typename Fn>
FASTCLIP_ALWAYS_INLINE decltype(auto) visit_dtype(const TensorMeta& meta, int64_t begin, const Fn& fn) {
  switch (static_cast<DType>(meta.dtype)) {
    case DType::kFloat16: return fn(static_cast<c10::Half*>(meta.data) + begin);
    case DType::kBFloat16: return fn(static_cast<c10::BFloat16*>(meta.data) + begin);
    case DType::kFloat64: return fn(static_cast<double*>(meta.data) + begin);
    case DType::kFloat32:
    default: return fn(static_cast<float*>(meta.data) + begin);
  }
}

// Element conversions written so that the compiler can vectorise them: bfloat16 as bit shifts
// (round to nearest even, NaN kept quiet, as c10::BFloat16), float16 through the compiler's
// _Float16 (F16C instructions in the AVX2 variant).
template <typename opmath_t, typename scalar_t>
FASTCLIP_ALWAYS_INLINE opmath_t load_opmath(const scalar_t* p) {
  return static_cast<opmath_t>(*p);
}

template <typename opmath_t>
FASTCLIP_ALWAYS_INLINE opmath_t load_opmath(const c10::BFloat16* p) {
  uint16_t bits;
  std::memcpy(&bits, p, sizeof(bits));
  const uint32_t widened = static_cast<uint32_t>(bits) << 16;
  float value;
  std::memcpy(&value, &widened, sizeof(value));
  return static_cast<opmath_t>(value);
}

#if defined(__FLT16_MAX__)
#define FASTCLIP_HAVE_FLOAT16 1
template <typename opmath_t>
FASTCLIP_ALWAYS_INLINE opmath_t load_opmath(const c10::Half* p) {
  _Float16 value;
  std::memcpy(&value, p, sizeof(value));
  return static_cast<opmath_t>(value);
}
#endif

template <typename scalar_t, typename opmath_t>
FASTCLIP_ALWAYS_INLINE void store_from_opmath(scalar_t* p, opmath_t value) {
  *p = static_cast<scalar_t>(value);
}

FASTCLIP_ALWAYS_INLINE void store_from_opmath(c10::BFloat16* p, float value) {
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof(bits));
  const uint32_t rounded = (bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16;
  const uint16_t out = value != value ? uint16_t{0x7FC0} : static_cast<uint16_t>(rounded);
  std::memcpy(p, &out, sizeof(out));
}

#if defined(FASTCLIP_HAVE_FLOAT16)
FASTCLIP_ALWAYS_INLINE void store_from_opmath(c10::Half* p, float value) {
  const _Float16 out = static_cast<_Float16>(value);
  std::memcpy(p, &out, sizeof(out));
}
#endif

// partial_of's ending, shared with the explicitly vectorised loops that fill the same lanes
// (cpu_chunk_ops.cpp): elements [i, n) one at a time, then the lanes' fixed tree.
template <NormKind kind, typename scalar_t, typename acc_t>
FASTCLIP_ALWAYS_INLINE acc_t finish_partial(acc_t* lanes, const scalar_t* x, int64_t i, int64_t n, acc_t p) {
  acc_t tail = acc_t(0);
  for (; i < n; ++i) tail = norm_combine<kind>(tail, norm_element<kind>(load_opmath<acc_t>(x + i), p));
  for (int width = kLanes / 2; width > 0; width /= 2) {
    for (int j = 0; j < width; ++j) lanes[j] = norm_combine<kind>(lanes[j], lanes[j + width]);
  }
  return norm_combine<kind>(lanes[0], tail);
}

FASTCLIP_ALWAYS_INLINE float magnitude(float x) { return __builtin_fabsf(x); }
FASTCLIP_ALWAYS_INLINE double magnitude(double x) { return __builtin_fabs(x); }

// The inf-norm partial of x[0, n): the largest magnitude, NaN if any element is NaN. NaNs are
// counted in float lanes of their own rather than kept by the maximum's select (nan_max): GCC 12
// at -O3 vectorises only this form (the select, or an integer flag, ran 4-5x slower: scalar).
// (The maximum is exact, so any order of the lanes gives the same value.)
template <typename scalar_t, typename acc_t>
FASTCLIP_ALWAYS_INLINE acc_t max_magnitude_of(const scalar_t* x, int64_t n) {
  acc_t peak[kLanes], nans[kLanes];
  for (int j = 0; j < kLanes; ++j) peak[j] = nans[j] = acc_t(0);
  auto add = [&](int j, acc_t v) {
    const acc_t magnitude = v < acc_t(0) ? -v : v;  // (GCC vectorises this form here, not fabs)
    peak[j] = magnitude > peak[j] ? magnitude : peak[j];
    nans[j] += v != v ? acc_t(1) : acc_t(0);
  };
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int j = 0; j < kLanes; ++j) add(j, load_opmath<acc_t>(x + i + j));
  }
  for (; i < n; ++i) add(0, load_opmath<acc_t>(x + i));
  for (int j = 1; j < kLanes; ++j) {
    peak[0] = peak[j] > peak[0] ? peak[j] : peak[0];
    nans[0] += nans[j];
  }
  return nans[0] != acc_t(0) ? static_cast<acc_t>(__builtin_nan("")) : peak[0];
}

// The partial of x[0, n): element i goes to lane i % kLanes, the tail to its own sum.
template <NormKind kind, typename scalar_t, typename acc_t>
FASTCLIP_ALWAYS_INLINE acc_t partial_of(const scalar_t* x, int64_t n, acc_t p) {
  if constexpr (kind == NormKind::kInf) return max_magnitude_of<scalar_t, acc_t>(x, n);
  acc_t lanes[kLanes];
  for (int j = 0; j < kLanes; ++j) lanes[j] = acc_t(0);
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int j = 0; j < kLanes; ++j) {
      const acc_t v = load_opmath<acc_t>(x + i + j);
      // L1 through the builtin fabs: GCC 12 vectorised norm_element's select form of it 7x slower
      // on bfloat16 data (the sum is the same: only a -0 or a NaN's sign differs, and neither shows).
      lanes[j] = norm_combine<kind>(lanes[j], kind == NormKind::kL1 ? magnitude(v) : norm_element<kind>(v, p));
    }
  }
  return finish_partial<kind>(lanes, x, i, n, p);
}

// Whether every element of x[0, n) is +0 or -0: an OR of the bits, magnitude bits kept. For an
// L2 chunk whose float sum is exactly 0, which is all zeros far more often than all underflowed.
template <typename scalar_t>
FASTCLIP_ALWAYS_INLINE bool all_zero(const scalar_t* x, int64_t n) {
  using bits_t = std::conditional_t<sizeof(scalar_t) == 2, uint16_t,
                                    std::conditional_t<sizeof(scalar_t) == 4, uint32_t, uint64_t>>;
  static_assert(sizeof(bits_t) == sizeof(scalar_t), "a float type of 2, 4 or 8 bytes");
  bits_t any = 0;
  for (int64_t i = 0; i < n; ++i) {
    bits_t bits;
    std::memcpy(&bits, x + i, sizeof(bits_t));
    any |= bits;
  }
  return (any & (std::numeric_limits<bits_t>::max() >> 1)) == 0;  // all but the sign bit
}

// The wide general-p recompute's sum of (|x| / m)^p over x[0, n), m being the largest magnitude
// (norm_math.h's scaled_power). Rare (a chunk whose float sum left the safe range), so plain.
template <typename scalar_t>
double scaled_power_sum(const scalar_t* x, int64_t n, double m, double p) {
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) sum += scaled_power(load_opmath<double>(x + i), m, p);
  return sum;
}

template <typename scalar_t, typename opmath_t>
FASTCLIP_ALWAYS_INLINE void scale_in_place(scalar_t* x, int64_t n, opmath_t coef) {
  for (int64_t i = 0; i < n; ++i) store_from_opmath(x + i, load_opmath<opmath_t>(x + i) * coef);
}

template <typename scalar_t, typename opmath_t>
FASTCLIP_ALWAYS_INLINE void clamp_in_place(scalar_t* x, int64_t n, opmath_t bound) {
  for (int64_t i = 0; i < n; ++i) {
    store_from_opmath(x + i, clamp_symmetric(load_opmath<opmath_t>(x + i), bound));
  }
}

}  // namespace cpu
}  // namespace fastclip
