// Per-chunk entry points of the CPU backend: dtype and norm kind are dispatched here, and on
// x86 the widest instruction set present is picked once at run time (AVX-512, else AVX2+FMA+F16C,
// else baseline), so one binary is both portable and fast. FASTCLIP_CPU_ISA=generic|avx2 caps it.
#pragma once

#include <cstdint>

#include "../common/tensor_list.h"

namespace fastclip {
namespace cpu {

// Partial (sum of |x|^p, or max |x|) of elements [begin, end) of `meta`.
float chunk_partial(NormKind kind, const TensorMeta& meta, int64_t begin, int64_t end, float p);
double chunk_partial(NormKind kind, const TensorMeta& meta, int64_t begin, int64_t end, double p);

// The float partials of two ranges of n elements of one dtype, out[0] and out[1], each exactly
// what chunk_partial computes, in one loop (faster where one range's sum waits on its own
// latency). Returns false, computing nothing, where there is no such loop (only L2 has one).
bool chunk_partial_pair(NormKind kind, const TensorMeta& a, int64_t a_begin, const TensorMeta& b, int64_t b_begin,
                        int64_t n, float p, float* out);

// The range-safe partial (common/norm_math.h) of elements [begin, end) of `meta`, whose sum as
// chunk_partial or chunk_partial_pair accumulated it is `sum`: converted, or where a float sum
// may have overflowed or underflowed, the range recomputed wide.
double partial_from_sum(NormKind kind, const TensorMeta& meta, int64_t begin, int64_t end, double p, float sum);
double partial_from_sum(NormKind kind, const TensorMeta& meta, int64_t begin, int64_t end, double p, double sum);

// x *= coef over [begin, end), in float (double for float64 tensors).
void chunk_scale(const TensorMeta& meta, int64_t begin, int64_t end, double coef);

// x = clamp(x, -bound, bound) over [begin, end).
void chunk_clamp(const TensorMeta& meta, int64_t begin, int64_t end, double bound);

}  // namespace cpu
}  // namespace fastclip
