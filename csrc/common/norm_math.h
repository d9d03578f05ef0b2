// Arithmetic shared by the CPU and CUDA backends: per-element accumulation, the fixed-order
// combine of partials, the finalisation of a p-norm and torch's clip coefficient.
// Everything here is __host__ __device__ so the CPU tests exercise the code the GPU runs.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define FASTCLIP_HD __host__ __device__ __forceinline__
#else
#define FASTCLIP_HD inline
#endif

namespace fastclip {

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

// Combine two partials (sums, or maxima for the inf-norm).
template <NormKind kind, typename acc_t>
FASTCLIP_HD acc_t norm_combine(acc_t a, acc_t b) {
  if constexpr (kind == NormKind::kInf) {
    return nan_max(a, b);
  } else {
    return a + b;
  }
}

template <typename acc_t>
FASTCLIP_HD acc_t norm_combine(NormKind kind, acc_t a, acc_t b) {
  return kind == NormKind::kInf ? nan_max(a, b) : a + b;
}

// A tensor's partial as it enters the total. torch's total is the norm of the per-tensor norms;
// for every p > 0 that equals finalising the combined partials, and for p = 0 it counts the
// tensors that have any nonzero element.
template <typename acc_t>
FASTCLIP_HD acc_t total_contribution(NormKind kind, acc_t tensor_partial) {
  if (kind == NormKind::kZero) return tensor_partial != acc_t(0) ? acc_t(1) : acc_t(0);
  return tensor_partial;
}

// Combine v[0..n) in a fixed order whose rounding error grows like (64 + n / 64) rather than
// n: runs of 64 are folded in sequence, then the run results in sequence. No local arrays, so
// it costs a GPU kernel no stack. Used for the per-tensor combine of chunk partials and for the
// total over tensors.
template <typename acc_t>
FASTCLIP_HD acc_t blocked_combine(NormKind kind, const acc_t* v, int64_t n) {
  constexpr int64_t kRun = 64;
  acc_t result = acc_t(0);
  for (int64_t run_begin = 0; run_begin < n; run_begin += kRun) {
    const int64_t run_end = run_begin + kRun < n ? run_begin + kRun : n;
    acc_t run = v[run_begin];
    for (int64_t i = run_begin + 1; i < run_end; ++i) run = norm_combine(kind, run, v[i]);
    result = run_begin == 0 ? run : norm_combine(kind, result, run);
  }
  return result;
}

// Turn a combined partial into a norm. The compile-time form keeps pow out of the kernels of
// the other kinds (a call there costs registers).
template <NormKind kind, typename acc_t>
FASTCLIP_HD acc_t norm_finalize(acc_t partial, acc_t p) {
  if constexpr (kind == NormKind::kL2) {
    return fc_sqrt(partial);
  } else if constexpr (kind == NormKind::kGeneral) {
    return fc_pow(partial, acc_t(1) / p);
  } else {
    return partial;
  }
}

template <typename acc_t>
FASTCLIP_HD acc_t norm_finalize(NormKind kind, acc_t partial, acc_t p) {
  switch (kind) {
    case NormKind::kL2:
      return norm_finalize<NormKind::kL2>(partial, p);
    case NormKind::kGeneral:
      return norm_finalize<NormKind::kGeneral>(partial, p);
    default:
      return partial;
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
