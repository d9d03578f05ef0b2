// The sanitizer target: the layer's primitives and every kernel of csrc/cuda, run through the
// execution layer at small sizes with no torch, built with -fsanitize=thread or =address by
// .ci/run (csrc/simt/tests/run_sanitizers.sh). Checks results against plain loops in double, so
// a run is also a test: it exits non-zero on a wrong result, and the sanitizer on a race or an
// out-of-bounds access.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "../cuda_on_cpu.h"
#include "../../cuda/kernels.h"
#include "../../cuda/launch.cuh"
#include "../../cuda/stats_kernels.h"
#include "../runtime.h"

namespace {

int failures = 0;

void expect(bool ok, const std::string& what) {
  if (!ok) {
    ++failures;
    std::fprintf(stderr, "FAILED: %s\n", what.c_str());
  }
}

bool close(double a, double b, double rtol) { return std::fabs(a - b) <= rtol * std::fabs(b) + 1e-30; }

// --- the layer's primitives, through tiny kernels -------------------------------------------

__global__ void reduce_kernel(const float* in, float* out) {
  __shared__ float partial[32];
  float v = in[blockIdx.x * blockDim.x + threadIdx.x];
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_down_sync(0xffffffffu, v, offset);
  if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = v;
  __syncthreads();
  if (threadIdx.x == 0) {
    float total = 0;
    for (unsigned w = 0; w < blockDim.x / 32; ++w) total += partial[w];
    out[blockIdx.x] = total;
  }
}

__global__ void ballot_kernel(unsigned* out) {
  const unsigned ballot = __ballot_sync(0xffffffffu, threadIdx.x % 3 == 0);
  const int xor_partner = __shfl_xor_sync(0xffffffffu, static_cast<int>(threadIdx.x), 1);
  if (threadIdx.x == 0) out[0] = ballot;
  out[1 + threadIdx.x] = static_cast<unsigned>(xor_partner);
}

__global__ void divergent_barrier_kernel() {
  if (threadIdx.x < 5) __syncthreads();
}

// Every block adds its index after grid_sync reads all blocks' first writes.
__global__ void grid_sync_kernel(int* values, int* sums) {
  if (threadIdx.x == 0) values[blockIdx.x] = static_cast<int>(blockIdx.x) + 1;
  ::fastclip::simt::grid_barrier();
  if (threadIdx.x == 0) {
    int sum = 0;
    for (unsigned b = 0; b < gridDim.x; ++b) sum += values[b];
    sums[blockIdx.x] = sum;
  }
}

void test_primitives() {
  using fastclip::cuda::launch_kernel;
  std::vector<float> in(4 * 256);
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> uniform(-1, 1);
  for (float& x : in) x = uniform(rng);
  std::vector<float> out(4);
  expect(launch_kernel<reduce_kernel>(4, 256, nullptr, in.data(), out.data()) == cudaSuccess, "reduce launch");
  for (int b = 0; b < 4; ++b) {
    double expected = 0;
    for (int i = 0; i < 256; ++i) expected += in[b * 256 + i];
    expect(close(out[b], expected, 1e-5), "block reduce " + std::to_string(b));
  }
  std::vector<unsigned> votes(1 + 64);
  expect(launch_kernel<ballot_kernel>(1, 64, nullptr, votes.data()) == cudaSuccess, "ballot launch");
  unsigned ballot = 0;
  for (int lane = 0; lane < 32; ++lane) ballot |= lane % 3 == 0 ? 1u << lane : 0u;
  expect(votes[0] == ballot, "ballot");
  for (unsigned t = 0; t < 64; ++t) expect(votes[1 + t] == (t ^ 1u), "shfl_xor lane " + std::to_string(t));
  expect(launch_kernel<divergent_barrier_kernel>(2, 64, nullptr) == cudaErrorLaunchFailure, "divergent barrier fails");
  expect(std::strstr(fastclip::simt::last_error_message(), "divergent") != nullptr, "divergent barrier message");

  const unsigned blocks = static_cast<unsigned>(fastclip::simt::max_cooperative_blocks());
  std::vector<int> values(blocks, 0), sums(blocks, 0);
  const cudaError_t coop = fastclip::simt::launch({"grid_sync_kernel", blocks, 64, true},
                                                   [&] { grid_sync_kernel(values.data(), sums.data()); });
  expect(coop == cudaSuccess, "cooperative launch");
  for (unsigned b = 0; b < blocks; ++b) expect(sums[b] == static_cast<int>(blocks * (blocks + 1) / 2), "grid sum");
  expect(fastclip::simt::launch({"grid_sync_kernel", blocks + 1, 64, true}, [&] {}) ==
             cudaErrorCooperativeLaunchTooLarge, "cooperative grid too large");
  expect(fastclip::simt::launch({"grid_sync_kernel", 2, 64, false},
                                [&] { grid_sync_kernel(values.data(), sums.data()); }) == cudaErrorLaunchFailure,
         "grid_sync outside a cooperative launch fails");
}

}  // namespace

int main() {
  test_primitives();
  if (failures) {
    std::fprintf(stderr, "%d check(s) failed\n", failures);
    return 1;
  }
  std::printf("simt self-test passed\n");
  return 0;
}
