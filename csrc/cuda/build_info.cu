#include "build_info.h"

#define FASTCLIP_STRINGIFY_VALUE(...) #__VA_ARGS__
#define FASTCLIP_STRINGIFY(...) FASTCLIP_STRINGIFY_VALUE(__VA_ARGS__)

namespace fastclip {
namespace cuda {

// nvcc defines __CUDA_ARCH_LIST__ in every pass, the host one included.
const char* compiled_archs() { return FASTCLIP_STRINGIFY(__CUDA_ARCH_LIST__); }

}  // namespace cuda
}  // namespace fastclip
