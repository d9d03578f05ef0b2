// The interface between the torch-facing CUDA entry points (<op>.cpp) and the kernels
// (<op>_kernel.cu): a plain parameter struct per kernel and a function that launches it on a
// stream, returning the launch's error. No torch headers, so the .cu files compile in seconds.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "../common/tensor_list.h"

namespace fastclip {
namespace cuda {

constexpr int kThreads = 512;
// GPU chunks are never smaller than this; for large lists they grow so that there are a few
// chunks per block (fewer partials to combine) while every block still gets work.
constexpr int64_t kMinChunkSize = 64 * 1024;
// ... and never larger than this: a chunk's float sums stay exact counts (p = 0) and within the
// underflow bound of norm_math.h's safe range.
constexpr int64_t kMaxChunkSize = int64_t{1} << 24;

// A planned tensor list as the kernels see it (both arrays in device memory).
struct ChunkList {
  const TensorMeta* tensors;
  const ChunkMeta* chunks;
  int32_t num_tensors;
  int32_t num_chunks;
  int64_t chunk_size;
};

// A contiguous device array of a DType; the kernels widen each element to double.
struct DeviceValues {
  const void* data;
  int32_t dtype;  // a DType
};
// (The stateful clippers' one-block kernels are declared in stats_kernels.h.)

// multi_tensor_norm: every block reduces whole chunks; the last block to finish combines.
struct NormParams {
  ChunkList list;
  NormKind kind;
  double p;
  bool acc_double;              // accumulate in double (some input is float64)
  void* chunk_partials;         // double[num_chunks], scratch (range-safe partials, norm_math.h)
  void* contributions;          // double[num_tensors], scratch
  void* per_tensor_out;         // acc[num_tensors], or nullptr when per-tensor norms are not wanted
  void* total_out;              // one element of total_dtype
  int32_t total_dtype;          // a DType
  void* accumulated_total_out;  // acc[1]: the total before it is stored, or nullptr
  unsigned int* blocks_done;    // zero before the launch; the last block to finish combines
};
cudaError_t launch_multi_tensor_norm(const NormParams& params, int num_blocks, cudaStream_t stream);

// multi_tensor_scale_: x *= factor[0], or factor[tensor] with per_tensor. (Also the stats ops'
// update of their grads: common/stats_op_args.h's GradsUpdate.)
struct ScaleParams {
  ChunkList list;
  DeviceValues factor;
  bool per_tensor;
  bool clear_on_zero;   // a factor of exactly 0 stores zeros (NaN and inf become 0)
  bool zero_where_set;  // the value read is a flag: the factor is 0 where it is non-zero, else 1
};
cudaError_t launch_multi_tensor_scale(const ScaleParams& params, int num_blocks, cudaStream_t stream);

// multi_tensor_clip_by_norm_: x *= min(max_norm / (total_norm + 1e-6), 1).
struct ClipByNormParams {
  ChunkList list;
  DeviceValues total_norm;  // one value
  double max_norm;
  // The same total before it was stored (data nullptr when unknown): the coefficient comes from
  // it where the stored one overflowed (norm_math.h's coefficient_total).
  DeviceValues accumulated_total;
};
cudaError_t launch_multi_tensor_clip_by_norm(const ClipByNormParams& params, int num_blocks, cudaStream_t stream);

// multi_tensor_clip_grad_norm_: the norm (clip.total_norm is norm.total_out), then the clip by it:
// one cooperative launch with single_launch where the device supports it (the grid is then what
// fits at once, not num_blocks), else two launches. The results are bitwise the same.
cudaError_t launch_multi_tensor_clip_grad_norm(const NormParams& norm, const ClipByNormParams& clip, int num_blocks,
                                               bool single_launch, cudaStream_t stream);

// multi_tensor_clamp_: x = clamp(x, -bound, bound).
struct ClampParams {
  ChunkList list;
  double bound;
};
cudaError_t launch_multi_tensor_clamp(const ClampParams& params, int num_blocks, cudaStream_t stream);

// agc_clip_: one entry per tensor that has rows. A row of at most kAgcLongRow elements is reduced
// and scaled by one block of agc_clip_kernel while in L2. A longer row (a huge 1-d tensor is one
// row) is cut into segments_per_row segments of segment_length elements (the last shorter):
// agc_partials_kernel writes each segment's sums of squares to `partials`, then each segment's
// block of agc_scale_kernel combines its row's partials in segment order and scales its segment.
// The cut depends on the row length alone, so the bits do not depend on the grid. The short rows
// are numbered back to back from 0 over the entries that have them, from first_row; the long
// rows' segments likewise from first_segment (plan_agc_units fills both and the cut).
struct AgcTensor {
  void* grad;         // row r is elements [r * row_length, (r + 1) * row_length)
  const void* param;  // same layout as grad
  int64_t num_rows;   // >= 1
  int64_t row_length;
  int64_t segment_length;    // row_length for short rows
  int64_t segments_per_row;  // 1 for short rows
  int64_t first_row;         // long rows' entries have none: the next entry's first_row
  int64_t first_segment;     // short rows' entries have none: the next entry's first_segment
  int32_t grad_dtype;        // a DType
  int32_t param_dtype;       // a DType
};

struct AgcParams {
  const AgcTensor* tensors;  // device memory
  int32_t num_tensors;       // >= 1
  int64_t total_rows;        // short rows
  int64_t total_segments;    // long rows' segments
  double* partials;          // [total_segments][2]: param's, then grad's sum of squares; null when none
  double clip_factor;
  double eps;
};

constexpr int kAgcThreads = 256;
constexpr int kAgcBlocksPerSM = 3;                // the kernels' launch bounds; the grid is at most this many per SM
constexpr int64_t kAgcSegment = 64 * 1024;        // elements: a long row's shortest segment
constexpr int64_t kAgcLongRow = 4 * kAgcSegment;  // longer rows are cut into segments
constexpr int64_t kAgcMaxSegments = 1024;         // per row: each segment's block reads them all

// Fills the entries' segment_length, segments_per_row, first_row and first_segment from their
// num_rows and row_length, and the totals.
inline void plan_agc_units(AgcTensor* entries, int64_t count, int64_t* total_rows, int64_t* total_segments) {
  *total_rows = *total_segments = 0;
  for (int64_t i = 0; i < count; ++i) {
    AgcTensor& t = entries[i];
    t.segment_length = t.row_length;
    if (t.row_length > kAgcLongRow) {
      const int64_t spread = (t.row_length + kAgcMaxSegments - 1) / kAgcMaxSegments;
      const int64_t rounded = (spread + 63) / 64 * 64;  // a whole number of 16-byte vectors of any dtype
      t.segment_length = rounded > kAgcSegment ? rounded : kAgcSegment;
    }
    t.segments_per_row = (t.row_length + t.segment_length - 1) / t.segment_length;
    t.first_row = *total_rows;
    t.first_segment = *total_segments;
    if (t.segments_per_row == 1) *total_rows += t.num_rows;
    else *total_segments += t.num_rows * t.segments_per_row;
  }
}

// Launches agc_clip_kernel where there are short rows, agc_partials_kernel then agc_scale_kernel
// where there are long ones, each on at most num_blocks blocks.
cudaError_t launch_agc_clip(const AgcParams& params, int num_blocks, cudaStream_t stream);

}  // namespace cuda
}  // namespace fastclip
