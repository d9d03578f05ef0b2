#pragma once

#include <ATen/Parallel.h>

#include "../common/list_plan.h"

namespace fastclip {
namespace cpu {

// Calls fn(chunk_index, meta, begin, end) for every chunk of the plan, spread over ATen's
// intra-op threads. Each chunk writes only its own outputs, so the result does not depend on
// how the chunks are shared out.
// `reverse` walks each thread's share backwards; ATen splits the range the same way every time,
// so a reversed pass starts where the previous forward pass ended, on cached data.
template <typename Fn>
void for_each_chunk(const ListPlan& plan, const Fn& fn, bool reverse = false) {
  const int64_t num_chunks = static_cast<int64_t>(plan.chunks.size());
  at::parallel_for(0, num_chunks, 1, [&](int64_t first, int64_t last) {
    for (int64_t i = first; i < last; ++i) {
      const int64_t c = reverse ? first + last - 1 - i : i;
      const ChunkMeta& chunk = plan.chunks[c];
      const TensorMeta& meta = plan.tensors[chunk.tensor];
      int64_t begin = 0, end = 0;
      chunk_range(meta, chunk, plan.chunk_size, &begin, &end);
      fn(c, meta, begin, end);
    }
  });
}

}  // namespace cpu
}  // namespace fastclip
