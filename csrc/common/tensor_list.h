// Plain descriptions of a tensor list, shared by the CPU and CUDA backends (copied to the device
// as they are). Every tensor is cut into chunks of `chunk_size` elements; a chunk is the unit of
// work and of partial results, so the reduction order depends on the list alone, never on the
// number of threads or blocks.
#pragma once

#include <cstdint>

#include "norm_math.h"

namespace fastclip {

FASTCLIP_HD int64_t dtype_size(int32_t dtype) {
  switch (static_cast<DType>(dtype)) {
    case DType::kFloat32: return 4;
    case DType::kFloat16: return 2;
    case DType::kBFloat16: return 2;
    case DType::kFloat64: return 8;
  }
  return 0;
}

struct TensorMeta {
  void* data;  // first element; the tensor is dense over [data, data + numel)
  int64_t numel;
  int32_t dtype;        // a DType
  int32_t first_chunk;  // chunks of this tensor are [first_chunk, next tensor's first_chunk)
};

struct ChunkMeta {
  int32_t tensor;           // index into the TensorMeta array
  int32_t index_in_tensor;  // the chunk starts at element index_in_tensor * chunk_size
};

// Elements [begin, end) of tensor `meta` covered by chunk `chunk`.
FASTCLIP_HD void chunk_range(const TensorMeta& meta, const ChunkMeta& chunk, int64_t chunk_size, int64_t* begin,
                             int64_t* end) {
  *begin = static_cast<int64_t>(chunk.index_in_tensor) * chunk_size;
  int64_t stop = *begin + chunk_size;
  *end = stop < meta.numel ? stop : meta.numel;
}

}  // namespace fastclip
