// Arithmetic shared by the CPU and CUDA backends: per-element accumulation, the fixed-order
// combine of partials, the finalisation of a p-norm and torch's clip coefficient.
// Everything here is __host__ __device__ so the CPU tests exercise the code the GPU runs.
#pragma once

#include <cmath>
#include <cstdint>
#include <type_traits>

#if defined(__CUDACC__)
#define FASTCLIP_HD __host__ __device__ __forceinline__
#else
#define FASTCLIP_HD inline
#endif

namespace fastclip {

// The dtypes both backends handle (a tensor's dtype travels as this, in an int32_t).
enum class DType : int32_t { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2, kFloat64 = 3 };

// torch adds this to the total norm before dividing (clip_grads_with_norm_).
constexpr double kClipEps = 1e-6;

enum class NormKind : int32_t {
  kL2 = 0,       // sqrt(sum x^2)
  kL1 = 1,       // sum |x|
  kInf = 2,      // max |x|
  kZero = 3,     // count of nonzero elements (torch's p = 0)
  kGeneral = 4,  // (sum |x|^p)^(1/p)
};

inline NormKind norm_kind_for(double p) {
  if (p == 2.0) return NormKind::kL2;
  if (p == 1.0) return NormKind::kL1;
  if (std::isinf(p)) return NormKind::kInf;
  if (p == 0.0) return NormKind::kZero;
  return NormKind::kGeneral;
}

// Overloads that pick the float or double libm routine on host and device alike.
FASTCLIP_HD float fc_pow(float a, float b) { return powf(a, b); }
FASTCLIP_HD double fc_pow(double a, double b) { return ::pow(a, b); }
FASTCLIP_HD float fc_sqrt(float a) { return sqrtf(a); }
FASTCLIP_HD double fc_sqrt(double a) { return ::sqrt(a); }

// max that lets a NaN win, as torch's max reductions do.
template <typename acc_t>
FASTCLIP_HD acc_t nan_max(acc_t a, acc_t b) {
  return (a != a || a > b) ? a : b;
}

// What one element adds to its partial. `p` is used by kGeneral only.
template <NormKind kind, typename acc_t>
FASTCLIP_HD acc_t norm_element(acc_t x, acc_t p) {
  if constexpr (kind == NormKind::kL2) {
    return x * x;
  } else if constexpr (kind == NormKind::kL1 || kind == NormKind::kInf) {
    return x < acc_t(0) ? -x : x;  // fabs without a libm call; keeps NaN
  } else if constexpr (kind == NormKind::kZero) {
    return x != acc_t(0) ? acc_t(1) : acc_t(0);  // NaN counts as nonzero, as in torch
  } else {
    return fc_pow(x < acc_t(0) ? -x : x, p);
  }
}

// Combine two element sums of a chunk (sums, or maxima for the inf-norm).
template <NormKind kind, typename acc_t>
FASTCLIP_HD acc_t norm_combine(acc_t a, acc_t b) {
  if constexpr (kind == NormKind::kInf) {
    return nan_max(a, b);
  } else {
    return a + b;
  }
}

// ---- Chunk partials: range-safe, held in double --------------------------------------------
// A chunk's elements are summed in the accumulation type (float for float32, bfloat16 and
// float16 data, in lanes or threads), except for general p, summed in double: pow dominates its
// cost, and for p < 1 a float sum's rounding would reach the norm magnified 1/p times. The
// chunk's sum becomes its *partial*, a double, and everything after (per-tensor folds, the total)
// combines partials. For L2 and general p a sum can overflow (float squares of magnitudes above
// ~1.8e19) or lose its elements to underflow (float squares below ~1e-38) although the norm is an
// ordinary number. Such a chunk, one whose sum is outside the sum type's safe range (NaN and 0
// included), is recomputed wide: L2 in double (a float's square always fits a double), general
// p scaled by the chunk's largest magnitude. Below the safe minimum, the elements' underflow
// errors (2^-149 or 2^-1074 at most, each) could exceed 2^-24 of the sum of a chunk of up to 2^25
// elements; above it they cannot. float64 data keeps torch's plain double sums.
template <NormKind kind, typename acc_t>
using chunk_sum_t = std::conditional_t<kind == NormKind::kGeneral, double, acc_t>;

FASTCLIP_HD bool in_safe_range(float sum) { return sum >= 0x1p-100f && sum <= 3.40282346638528859812e+38f; }
FASTCLIP_HD bool in_safe_range(double sum) { return sum >= 0x1p-900 && sum <= 1.79769313486231570815e+308; }

// Whether a chunk's sum needs the wide recompute. float16 squares (2^-48 to 2^32) always fit a
// float, so an fp16 L2 float sum outside the safe range is an exact 0 or a NaN or inf element.
template <NormKind kind, typename sum_t>
FASTCLIP_HD bool needs_wide_partial(sum_t sum, int32_t dtype) {
  if (static_cast<DType>(dtype) == DType::kFloat64) return false;
  if constexpr (kind == NormKind::kL2) {
    return sizeof(sum_t) == sizeof(float) && static_cast<DType>(dtype) != DType::kFloat16 && !in_safe_range(sum);
  } else if constexpr (kind == NormKind::kGeneral) {
    return !in_safe_range(sum);
  } else {
    return false;  // sums of |x| and counts never overflow before the norm does; maxima are exact
  }
}

// General-p partials are held as log(sum |x|^p): any p and any float's power fits. NaN wins;
// log(0) = -inf is the empty or all-zero partial.
constexpr double kLogOfZero = -__builtin_huge_val();
FASTCLIP_HD double log_add(double a, double b) {
  if (a != a || b != b) return a + b;
  const double hi = a > b ? a : b, lo = a > b ? b : a;
  if (hi - hi != 0.0) return hi;  // both -inf, or +inf
  return hi + ::log1p(::exp(lo - hi));
}

// A chunk's partial from its sum accumulated as usual.
template <NormKind kind, typename acc_t>
FASTCLIP_HD double partial_of_sum(acc_t sum) {
  if constexpr (kind == NormKind::kGeneral) {
    return ::log(static_cast<double>(sum));
  } else {
    return static_cast<double>(sum);
  }
}

// What one element adds to the wide general-p recompute, m being the chunk's largest magnitude
// (finite and > 0): (|x| / m)^p <= 1, so nothing overflows and what underflows is negligible.
FASTCLIP_HD double scaled_power(double x, double m, double p) { return ::pow((x < 0.0 ? -x : x) / m, p); }

// The general-p partial log(m^p * scaled_sum) of a chunk whose largest magnitude is m.
FASTCLIP_HD double general_partial_of_scaled(double m, double scaled_sum, double p) {
  if (m != m) return m;
  if (m == 0.0) return kLogOfZero;
  if (m - m != 0.0) return m;  // an infinite element: an infinite norm
  return p * ::log(m) + ::log(scaled_sum);
}

// Combine two partials: sums, maxima for the inf-norm, log-sums for general p.
template <NormKind kind>
FASTCLIP_HD double partial_combine(double a, double b) {
  if constexpr (kind == NormKind::kInf) {
    return nan_max(a, b);
  } else if constexpr (kind == NormKind::kGeneral) {
    return log_add(a, b);
  } else {
    return a + b;
  }
}

// A tensor's partial as it enters the total. torch's total is the norm of the per-tensor norms;
// for every p > 0 that equals finalising the combined partials, and for p = 0 it counts the
// tensors that have any nonzero element.
FASTCLIP_HD double total_contribution(NormKind kind, double tensor_partial) {
  if (kind == NormKind::kZero) return tensor_partial != 0.0 ? 1.0 : 0.0;
  return tensor_partial;
}

// Combine v[0..n) in a fixed order whose rounding error grows like (64 + n / 64) rather than
// n: runs of 64 are folded in sequence, then the run results in sequence. No local arrays, so
// it costs a GPU kernel no stack. Used for the per-tensor combine of chunk partials and for the
// total over tensors.
template <NormKind kind>
FASTCLIP_HD double blocked_combine(const double* v, int64_t n) {
  constexpr int64_t kRun = 64;
  double result = kind == NormKind::kGeneral ? kLogOfZero : 0.0;
  for (int64_t run_begin = 0; run_begin < n; run_begin += kRun) {
    const int64_t run_end = run_begin + kRun < n ? run_begin + kRun : n;
    double run = v[run_begin];
    for (int64_t i = run_begin + 1; i < run_end; ++i) run = partial_combine<kind>(run, v[i]);
    result = run_begin == 0 ? run : partial_combine<kind>(result, run);
  }
  return result;
}

FASTCLIP_HD double blocked_combine(NormKind kind, const double* v, int64_t n) {
  switch (kind) {
    case NormKind::kInf: return blocked_combine<NormKind::kInf>(v, n);
    case NormKind::kGeneral: return blocked_combine<NormKind::kGeneral>(v, n);
    default: return blocked_combine<NormKind::kL2>(v, n);  // a sum, as for L1 and p = 0
  }
}

// Turn a combined partial into a norm. The compile-time form keeps exp and log out of the
// kernels of the other kinds (a call there costs registers).
template <NormKind kind>
FASTCLIP_HD double norm_finalize(double partial, double p) {
  if constexpr (kind == NormKind::kL2) {
    return ::sqrt(partial);
  } else if constexpr (kind == NormKind::kGeneral) {
    return ::exp(partial / p);
  } else {
    return partial;
  }
}

FASTCLIP_HD double norm_finalize(NormKind kind, double partial, double p) {
  switch (kind) {
    case NormKind::kL2: return norm_finalize<NormKind::kL2>(partial, p);
    case NormKind::kGeneral: return norm_finalize<NormKind::kGeneral>(partial, p);
    default: return partial;
  }
}

// torch's clip coefficient: clamp(max_norm / (total + 1e-6), max=1), rounded as torch rounds it
// (Python's `max_norm / tensor` is tensor.reciprocal() * max_norm), so the coefficient is the
// same bits. A NaN total gives NaN (every grad becomes NaN), an infinite total gives 0.
template <typename acc_t>
FASTCLIP_HD acc_t clip_coefficient(acc_t max_norm, acc_t total_norm) {
  const acc_t coef = (acc_t(1) / (total_norm + acc_t(kClipEps))) * max_norm;
  return coef > acc_t(1) ? acc_t(1) : coef;
}

// The total the clip coefficient is computed from: the total as stored in the grads' dtype (as
// torch computes it), except where storing turned a finite accumulated total into inf, as a
// half-precision list whose norm exceeds 65504 does: then the accumulated total, so the grads
// are clipped by their norm instead of zeroed (a deliberate difference from torch).
FASTCLIP_HD double coefficient_total(double stored, double accumulated) {
  const bool stored_infinite = stored == stored && stored - stored != 0.0;
  const bool accumulated_finite = accumulated - accumulated == 0.0;
  return stored_infinite && accumulated_finite ? accumulated : stored;
}

// clip_grad_value_: clamp to [-v, v]; NaN stays NaN (comparisons with NaN are false).
template <typename acc_t>
FASTCLIP_HD acc_t clamp_symmetric(acc_t x, acc_t v) {
  return x < -v ? -v : (x > v ? v : x);
}

}  // namespace fastclip
