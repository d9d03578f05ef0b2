// FASTCLIP_KERNEL_LOG=<path>: every kernel launch appends one line to <path>,
//   <kernel> grid=<blocks> block=<threads>[ cooperative]
// so tests and benchmarks can count launches (on the GPU and in the CPU execution layer alike).
// Read at every launch, so a process may point it elsewhere, or unset it, between launches. A
// launch captured into a CUDA graph is logged once, at the capture; replays log nothing.
#pragma once

#include <string>

namespace fastclip {
namespace cuda {

void log_kernel_launch(const char* kernel, int grid, int block, bool cooperative);

// "multi_tensor_norm_kernel<kL2, float>" from a __PRETTY_FUNCTION__ of a function templated on
// `auto Kernel`: the kernel with its namespaces dropped.
std::string kernel_name_from_signature(const char* signature);

}  // namespace cuda
}  // namespace fastclip
