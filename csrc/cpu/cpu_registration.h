// Whether this library's CPU kernels are registered. FASTCLIP_CPU_KERNELS=cuda in the environment
// at load time selects the CPU execution layer instead: fastclip/_library.py then loads
// fastclip._cuda_on_cpu, which registers the CUDA entry points and kernels (csrc/cuda, csrc/simt)
// for CPU tensors, so every TORCH_LIBRARY_IMPL(fastclip, CPU, m) here registers nothing: the
// layer's are then the only CPU kernels, not a silent override of these (torch 2.14 lets a later
// registration for the same op and key replace an earlier one without a word).
#pragma once

#include <cstdlib>
#include <cstring>

namespace fastclip {
namespace cpu {

inline bool cpu_ops_run_cuda_kernels() {
#ifdef FASTCLIP_PYTHON_MODULE
  static const bool cuda = [] {
    const char* value = std::getenv("FASTCLIP_CPU_KERNELS");
    return value != nullptr && std::strcmp(value, "cuda") == 0;
  }();
  return cuda;
#else
  return false;  // the CMake library for C++ users has no layer to defer to
#endif
}

}  // namespace cpu
}  // namespace fastclip
