// The interface between the torch-facing CUDA entry points (bindings.cpp) and the kernels
// (*.cu). Plain parameter structs, no torch headers: the .cu files compile in seconds.
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

// A planned tensor list as the kernels see it (both arrays in device memory).
struct ChunkList {
  const TensorMeta* tensors;
  const ChunkMeta* chunks;
  int32_t num_tensors;
  int32_t num_chunks;
  int64_t chunk_size;
};

struct NormParams {
  ChunkList list;
  NormKind kind;
  double p;
  bool acc_double;            // accumulate in double (some input is float64)
  void* chunk_partials;       // acc[num_chunks], scratch
  void* contributions;        // acc[num_tensors], scratch
  void* per_tensor_out;       // acc[num_tensors], or nullptr when per-tensor norms are not wanted
  void* total_out;            // one element of total_dtype
  int32_t total_dtype;        // a DType
  unsigned int* blocks_done;  // zero before the launch; the last block to finish combines
};

cudaError_t launch_multi_tensor_norm(const NormParams& params, int num_blocks, cudaStream_t stream);

enum class FactorKind : int32_t {
  kScalar = 0,      // x *= factor[0]
  kPerTensor = 1,   // x *= factor[tensor]
  kClipByNorm = 2,  // x *= min(bound / (factor[0] + 1e-6), 1), factor[0] being the total norm
};

struct ScaleParams {
  ChunkList list;
  FactorKind factor_kind;
  const void* factor;   // device values of factor_dtype
  int32_t factor_dtype; // a DType
  double bound;         // max_norm for kClipByNorm
  bool clear_on_zero;   // a coefficient of exactly 0 stores zeros (NaN and inf become 0)
};

cudaError_t launch_multi_tensor_scale(const ScaleParams& params, int num_blocks, cudaStream_t stream);

struct ClampParams {
  ChunkList list;
  double bound;
};

cudaError_t launch_multi_tensor_clamp(const ClampParams& params, int num_blocks, cudaStream_t stream);

// NFNets unit-wise clipping (agc_clip_). One entry per tensor that has rows; the entries' global
// rows are [first_row, first_row + num_rows), increasing and back to back from 0.
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
