// The per-tensor stats ops' loop on the CPU (autoclip_update_, adagc_update_).
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include "../common/stats_op_args.h"

namespace fastclip {
namespace cpu {

// Calls step(j, norm of entry j, total norm) for every entry, in parallel: entries own distinct
// state rows (the Python clipper passes each tensor once). Returns the total norm.
template <typename Step>
double for_each_entry(const PerEntryTensors& t, int64_t grain, const Step& step) {
  const double total = t.total_norm.to(at::kDouble).item<double>();
  const at::Tensor norms64 = t.norms.to(at::kDouble).contiguous();
  const double* norm = norms64.data_ptr<double>();
  at::parallel_for(0, t.norms.numel(), grain, [&](int64_t begin, int64_t end) {
    for (int64_t j = begin; j < end; ++j) step(j, norm[j], total);
  });
  return total;
}

}  // namespace cpu
}  // namespace fastclip
