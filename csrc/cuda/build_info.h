// What the CUDA half of this build contains, for fastclip._C.build_info.
#pragma once

namespace fastclip {
namespace cuda {

// The compute capabilities the kernels were compiled for, as nvcc lists them (e.g. "800,900").
const char* compiled_archs();

}  // namespace cuda
}  // namespace fastclip
