#include "stable_spam_chunks.h"

#include <type_traits>

#include "cpu_isa.h"
#include "cpu_loops.h"

namespace fastclip {
namespace cpu {
namespace {

// Calls add(lane, value) for every element of x[0, n) in the opmath type: element i in lane
// i % kLanes, the tail in lane 0. Independent lanes, as cpu_loops.h's, so the compiler vectorises
// without reassociating.
template <typename scalar_t, typename Add>
FASTCLIP_ALWAYS_INLINE void add_in_lanes(const scalar_t* x, int64_t n, const Add& add) {
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) {
    for (int j = 0; j < kLanes; ++j) add(j, load_opmath<opmath_of<scalar_t>>(x + i + j));
  }
  for (; i < n; ++i) add(0, load_opmath<opmath_of<scalar_t>>(x + i));
}

// Lane 0 of `lanes` after folding them in a fixed tree.
template <typename T>
FASTCLIP_ALWAYS_INLINE T sum_of_lanes(T* lanes) {
  for (int width = kLanes / 2; width > 0; width /= 2) {
    for (int j = 0; j < width; ++j) lanes[j] += lanes[j + width];
  }
  return lanes[0];
}

// NaNs are counted in lanes of their own, as in max_magnitude_of (cpu_loops.h), for the same reason.
template <typename scalar_t>
FASTCLIP_ALWAYS_INLINE ChunkPair max_and_sum_squares(const scalar_t* x, int64_t n) {
  using opmath_t = opmath_of<scalar_t>;
  opmath_t peak[kLanes], nans[kLanes];
  double sum[kLanes];
  for (int j = 0; j < kLanes; ++j) {
    peak[j] = nans[j] = opmath_t(0);
    sum[j] = 0.0;
  }
  add_in_lanes(x, n, [&](int j, opmath_t v) {
    const opmath_t a = v < opmath_t(0) ? -v : v;
    peak[j] = a > peak[j] ? a : peak[j];
    nans[j] += v != v ? opmath_t(1) : opmath_t(0);
    const double d = static_cast<double>(v);
    sum[j] += d * d;
  });
  for (int j = 1; j < kLanes; ++j) peak[0] = peak[j] > peak[0] ? peak[j] : peak[0];  // exact: any order
  return ChunkPair{sum_of_lanes(nans) != opmath_t(0) ? fc_nan() : static_cast<double>(peak[0]), sum_of_lanes(sum)};
}

template <typename scalar_t>
FASTCLIP_ALWAYS_INLINE ChunkPair split_sum_squares(const scalar_t* x, int64_t n, opmath_of<scalar_t> threshold) {
  using opmath_t = opmath_of<scalar_t>;
  double below[kLanes], above[kLanes];
  for (int j = 0; j < kLanes; ++j) below[j] = above[j] = 0.0;
  add_in_lanes(x, n, [&](int j, opmath_t v) {
    const double d = static_cast<double>(v);
    const bool high = adaclip_rescales(magnitude(v), threshold);
    below[j] += high ? 0.0 : d * d;
    above[j] += high ? d * d : 0.0;
  });
  return ChunkPair{sum_of_lanes(below), sum_of_lanes(above)};
}

template <typename scalar_t>
FASTCLIP_ALWAYS_INLINE void adaclip_scale(scalar_t* x, int64_t n, opmath_of<scalar_t> threshold,
                                          opmath_of<scalar_t> clipped_factor, opmath_of<scalar_t> factor) {
  using opmath_t = opmath_of<scalar_t>;
  for (int64_t i = 0; i < n; ++i) {
    const opmath_t v = load_opmath<opmath_t>(x + i);
    const bool high = adaclip_rescales(magnitude(v), threshold);
    store_from_opmath(x + i, v * (high ? clipped_factor : factor));
  }
}

// The threshold in the type the elements are compared in (adaclip_float_threshold for floats).
template <typename scalar_t>
FASTCLIP_ALWAYS_INLINE opmath_of<scalar_t> compared_threshold(double threshold) {
  if constexpr (std::is_same_v<scalar_t, double>) {
    return threshold;
  } else {
    return adaclip_float_threshold(threshold);
  }
}

FASTCLIP_ALWAYS_INLINE ChunkPair stats_by_dtype(const TensorMeta& meta, int64_t begin, int64_t n) {
  return visit_dtype(meta, begin, [&](auto x) FASTCLIP_INLINE_LAMBDA { return max_and_sum_squares(x, n); });
}

FASTCLIP_ALWAYS_INLINE ChunkPair split_by_dtype(const TensorMeta& meta, int64_t begin, int64_t n, double threshold) {
  return visit_dtype(meta, begin, [&](auto x) FASTCLIP_INLINE_LAMBDA {
    return split_sum_squares(x, n, compared_threshold<scalar_of<decltype(x)>>(threshold));
  });
}

FASTCLIP_ALWAYS_INLINE void scale_by_dtype(const TensorMeta& meta, int64_t begin, int64_t n, const SpamApply& a) {
  visit_dtype(meta, begin, [&](auto x) FASTCLIP_INLINE_LAMBDA {
    using scalar_t = scalar_of<decltype(x)>;
    using opmath_t = opmath_of<scalar_t>;
    adaclip_scale(x, n, compared_threshold<scalar_t>(a.threshold), static_cast<opmath_t>(a.clipped_factor),
                  static_cast<opmath_t>(a.factor));
  });
}

#if FASTCLIP_HAVE_AVX2_VARIANT
FASTCLIP_TARGET_AVX512 ChunkPair stats_avx512(const TensorMeta& m, int64_t b, int64_t n) {
  return stats_by_dtype(m, b, n);
}
FASTCLIP_TARGET_AVX2 ChunkPair stats_avx2(const TensorMeta& m, int64_t b, int64_t n) { return stats_by_dtype(m, b, n); }
FASTCLIP_TARGET_AVX512 ChunkPair split_avx512(const TensorMeta& m, int64_t b, int64_t n, double t) {
  return split_by_dtype(m, b, n, t);
}
FASTCLIP_TARGET_AVX2 ChunkPair split_avx2(const TensorMeta& m, int64_t b, int64_t n, double t) {
  return split_by_dtype(m, b, n, t);
}
FASTCLIP_TARGET_AVX512 void scale_avx512(const TensorMeta& m, int64_t b, int64_t n, const SpamApply& a) {
  scale_by_dtype(m, b, n, a);
}
FASTCLIP_TARGET_AVX2 void scale_avx2(const TensorMeta& m, int64_t b, int64_t n, const SpamApply& a) {
  scale_by_dtype(m, b, n, a);
}
#endif

void zero_range(const TensorMeta& meta, int64_t begin, int64_t end) {
  visit_dtype(meta, begin, [&](auto x) FASTCLIP_INLINE_LAMBDA {
    for (int64_t i = 0; i < end - begin; ++i) store_from_opmath(x + i, opmath_of<scalar_of<decltype(x)>>(0));
  });
}

}  // namespace

ChunkPair chunk_max_and_sum_squares(const TensorMeta& meta, int64_t begin, int64_t end) {
  return FASTCLIP_BY_ISA(stats_by_dtype, stats_avx2, stats_avx512, meta, begin, end - begin);
}

ChunkPair chunk_split_sum_squares(const TensorMeta& meta, int64_t begin, int64_t end, double threshold) {
  return FASTCLIP_BY_ISA(split_by_dtype, split_avx2, split_avx512, meta, begin, end - begin, threshold);
}

void chunk_adaclip_scale(const TensorMeta& meta, int64_t begin, int64_t end, const SpamApply& apply,
                         bool clear_on_zero) {
  if (clear_on_zero && apply.factor == 0.0) return zero_range(meta, begin, end);
  if (apply.factor == 1.0 && !(apply.threshold < fc_inf())) return;  // nothing rescaled, nothing scaled
  return FASTCLIP_BY_ISA(scale_by_dtype, scale_avx2, scale_avx512, meta, begin, end - begin, apply);
}

}  // namespace cpu
}  // namespace fastclip
