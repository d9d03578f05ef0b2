// Stable-SPAM's per-chunk loops on the CPU (stable_spam_norms, stable_spam_update_), for the ISA
// in use (cpu_isa.h).
#pragma once

#include <cstdint>

#include "../common/stable_spam_step.h"
#include "../common/tensor_list.h"

namespace fastclip {
namespace cpu {

struct ChunkPair {
  double first, second;
};

// (max |x|, sum x^2) over elements [begin, end) of `meta`, the sum in double.
ChunkPair chunk_max_and_sum_squares(const TensorMeta& meta, int64_t begin, int64_t end);

// (sum x^2 over |x| <= threshold, sum x^2 over |x| > threshold), in double.
ChunkPair chunk_split_sum_squares(const TensorMeta& meta, int64_t begin, int64_t end, double threshold);

// x *= apply.clipped_factor where |x| > apply.threshold, else apply.factor; with clear_on_zero a
// factor of exactly 0 stores zeros (NaN and inf included).
void chunk_adaclip_scale(const TensorMeta& meta, int64_t begin, int64_t end, const SpamApply& apply,
                         bool clear_on_zero);

}  // namespace cpu
}  // namespace fastclip
