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

// agc_clip_: one entry per tensor that has rows; the entries' global rows are
// [first_row, first_row + num_rows), increasing and back to back from 0.
struct AgcTensor {
  void* grad;         // row r is elements [r * row_length, (r + 1) * row_length)
  const void* param;  // same layout as grad
  int64_t num_rows;   // >= 1
  int64_t row_length;
  int64_t first_row;
  int32_t grad_dtype;   // a DType
  int32_t param_dtype;  // a DType
};

struct AgcParams {
  const AgcTensor* tensors;  // device memory
  int32_t num_tensors;       // >= 1
  int64_t total_rows;
  double clip_factor;
  double eps;
};

constexpr int kAgcThreads = 256;
constexpr int kAgcBlocksPerSM = 3;  // the kernel's launch bounds; the grid is at most this many per SM

cudaError_t launch_agc_clip(const AgcParams& params, int num_blocks, cudaStream_t stream);

}  // namespace cuda
}  // namespace fastclip
