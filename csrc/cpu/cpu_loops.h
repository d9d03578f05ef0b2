// The CPU inner loops. They are written as independent lanes so that the compiler vectorises
// them without reassociating floating point: the result is the same bits whatever the ISA's
// vector width, and the same on every run.
#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cstdint>

#include "../common/norm_math.h"

namespace fastclip {
namespace cpu {

constexpr int kLanes = 16;

// Forced inlining lets an AVX2 caller re-vectorise these loops for its own ISA.
#define FASTCLIP_ALWAYS_INLINE inline __attribute__((always_inline))

template <NormKind kind, typename scalar_t, typename acc_t>
FASTCLIP_ALWAYS_INLINE acc_t partial_of(const scalar_t* x, int64_t n, acc_t p) {
  acc_t lanes[kLanes];
  for (int j = 0; j < kLanes; ++j) lanes[j] = acc_t(0);
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int j = 0; j < kLanes; ++j) {
      lanes[j] = norm_combine<kind>(lanes[j], norm_element<kind>(static_cast<acc_t>(x[i + j]), p));
    }
  }
  acc_t tail = acc_t(0);
  for (; i < n; ++i) tail = norm_combine<kind>(tail, norm_element<kind>(static_cast<acc_t>(x[i]), p));
  for (int width = kLanes / 2; width > 0; width /= 2) {
    for (int j = 0; j < width; ++j) lanes[j] = norm_combine<kind>(lanes[j], lanes[j + width]);
  }
  return norm_combine<kind>(lanes[0], tail);
}

template <typename scalar_t, typename opmath_t>
FASTCLIP_ALWAYS_INLINE void scale_in_place(scalar_t* x, int64_t n, opmath_t coef) {
  for (int64_t i = 0; i < n; ++i) x[i] = static_cast<scalar_t>(static_cast<opmath_t>(x[i]) * coef);
}

template <typename scalar_t, typename opmath_t>
FASTCLIP_ALWAYS_INLINE void clamp_in_place(scalar_t* x, int64_t n, opmath_t bound) {
  for (int64_t i = 0; i < n; ++i) {
    x[i] = static_cast<scalar_t>(clamp_symmetric(static_cast<opmath_t>(x[i]), bound));
  }
}

}  // namespace cpu
}  // namespace fastclip
