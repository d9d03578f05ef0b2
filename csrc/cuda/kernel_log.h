// FASTCLIP_KERNEL_LOG=<path>: every kernel launch appends one line to <path>,
//   <kernel> grid=<blocks> block=<threads>[ cooperative]
// so tests and benchmarks can count launches (on the GPU and in the CPU execution layer alike).
// Read at every launch, so a process may point it elsewhere, or unset it, between launches. A
// launch captured into a CUDA graph is logged once, at the capture; replays log nothing. Only
// launches that happened are logged: one the runtime refused (a launch error) is not.
//
// Also counted, for the tests and bench/gpu_runtime_check.py (fastclip._C.launch_counters(), and
// fastclip._cuda_on_cpu's on the CPU execution layer): what the single launches met (launch.cuh).
#pragma once

#include <cstdint>
#include <string>

namespace fastclip {
namespace cuda {

void log_kernel_launch(const char* kernel, int grid, int block, bool cooperative);

struct LaunchCounters {
  int64_t refused_cooperative_launches;  // cooperative launches the runtime refused (MPS, green contexts)
  int64_t occupancy_queries;             // the queries of a kernel's resident blocks made, failed or answered
};
void count_refused_cooperative_launch();
void count_occupancy_query();
LaunchCounters launch_counters();

// "multi_tensor_norm_kernel<kL2, float>" from a __PRETTY_FUNCTION__ of a function templated on
// `auto Kernel`: the kernel with its namespaces dropped.
std::string kernel_name_from_signature(const char* signature);

}  // namespace cuda
}  // namespace fastclip
