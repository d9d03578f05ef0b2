// The sanitizer target of the execution layer, with no torch: its primitives, then every kernel
// of csrc/cuda through its launcher at small sizes (norm_kernels_test.cpp,
// elementwise_kernels_test.cpp, agc_kernel_test.cpp, stats_kernels_test.cpp, clip_step_test.cpp,
// stable_spam_kernels_test.cpp), each result checked against a loop in double or the same step run
// on the host. Built plain, with ThreadSanitizer and with AddressSanitizer by run_sanitizers.sh (in
// .ci/run): exits non-zero on a wrong result, the sanitizers on a race or an out-of-bounds access.
// `--race` runs only the negative control, a kernel missing its __syncthreads, which
// ThreadSanitizer must report; `--race-after-barrier` the same race after a __syncthreads.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "../cuda_on_cpu.h"
#include "../../cuda/kernels.h"
#include "../../cuda/launch.cuh"
#include "../runtime.h"
#include "../sanitizers.h"
#include "selftest.h"

namespace fastclip {
namespace selftest {
namespace {

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

// A block of 40 threads: warp 1 is partial (8 lanes). Per thread: the ballot of all, xor with
// 12 in 8-wide segments (earlier segments are read, later ones give the own value), and a
// negative source lane in 8-wide segments (lane 7 of the segment).
constexpr unsigned kPartialBlock = 40;
__global__ void partial_warp_kernel(unsigned* out) {
  const unsigned t = threadIdx.x;
  out[3 * t + 0] = __ballot_sync(0xffffffffu, 1);
  out[3 * t + 1] = static_cast<unsigned>(__shfl_xor_sync(0xffffffffu, static_cast<int>(t), 12, 8));
  out[3 * t + 2] = static_cast<unsigned>(__shfl_sync(0xffffffffu, static_cast<int>(t), -1, 8));
}

__global__ void bad_width_kernel(int* out) { out[threadIdx.x] = __shfl_sync(0xffffffffu, 1, 0, 3); }

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

// Block 1 fails before grid_sync, where the others wait: the launch's error is its own.
__global__ void trap_before_grid_sync_kernel() {
  if (blockIdx.x == 1 && threadIdx.x == 3) __trap();
  ::fastclip::simt::grid_barrier();
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
  std::vector<unsigned> partial(3 * kPartialBlock);
  expect(launch_kernel<partial_warp_kernel>(1, kPartialBlock, nullptr, partial.data()) == cudaSuccess,
         "partial warp launch");
  for (unsigned t = 0; t < kPartialBlock; ++t) {
    const unsigned warp_first = t / 32 * 32, lane = t % 32;
    const unsigned lanes = std::min(32u, kPartialBlock - warp_first);
    const unsigned expected_ballot = lanes == 32 ? ~0u : (1u << lanes) - 1u;
    const unsigned other = lane ^ 12u;
    const unsigned expected_xor = other < (lane / 8 + 1) * 8 ? warp_first + other : t;
    const unsigned expected_src = warp_first + lane / 8 * 8 + 7;
    expect(partial[3 * t] == expected_ballot, "ballot in a partial warp, thread " + std::to_string(t));
    expect(partial[3 * t + 1] == expected_xor, "shfl_xor width 8, thread " + std::to_string(t));
    expect(partial[3 * t + 2] == expected_src, "shfl src_lane -1 width 8, thread " + std::to_string(t));
  }
  std::vector<int> bad(32);
  expect(launch_kernel<bad_width_kernel>(1, 32, nullptr, bad.data()) == cudaErrorLaunchFailure, "width 3 fails");
  expect(std::strstr(fastclip::simt::last_error_message(), "width") != nullptr, "width 3 message");
  expect(launch_kernel<divergent_barrier_kernel>(2, 64, nullptr) == cudaErrorLaunchFailure, "divergent barrier fails");
  expect(std::strstr(fastclip::simt::last_error_message(), "divergent") != nullptr, "divergent barrier message");

  const unsigned blocks = static_cast<unsigned>(fastclip::simt::max_cooperative_blocks());
  std::vector<int> values(blocks, 0), sums(blocks, 0);
  const cudaError_t coop = fastclip::simt::launch({"grid_sync_kernel", blocks, 64, true},
                                                  [&] { grid_sync_kernel(values.data(), sums.data()); });
  expect(coop == cudaSuccess, "cooperative launch");
  for (unsigned b = 0; b < blocks; ++b) expect(sums[b] == static_cast<int>(blocks * (blocks + 1) / 2), "grid sum");
  for (int repeat = 0; repeat < 3; ++repeat) {
    expect(fastclip::simt::launch({"trap_before_grid_sync_kernel", blocks, 64, true},
                                  [&] { trap_before_grid_sync_kernel(); }) == cudaErrorLaunchFailure,
           "a block failing before grid_sync fails the launch");
    expect(std::strstr(fastclip::simt::last_error_message(), "__trap") != nullptr,
           std::string("the launch's error is the failing block's own: ") + fastclip::simt::last_error_message());
  }
  expect(
      fastclip::simt::launch({"grid_sync_kernel", blocks + 1, 64, true}, [&] {}) == cudaErrorCooperativeLaunchTooLarge,
      "cooperative grid too large");
  expect(fastclip::simt::launch({"grid_sync_kernel", 2, 64, false},
                                [&] { grid_sync_kernel(values.data(), sums.data()); }) == cudaErrorLaunchFailure,
         "grid_sync outside a cooperative launch fails");
}

// A fiber's run never returns from its entry, so ThreadSanitizer keeps frames of every run of a
// reused fiber: the layer retires its ThreadSanitizer fibers before their shadow stacks (64K
// frames) overflow, which they did after some 22K-65K runs. 70K one-thread launches run one fiber
// (the host thread's pool lends the same one each time) that often.
__global__ void one_thread_kernel(int* count) {
  __syncthreads();
  ++*count;
}

void test_fiber_reuse() {
  constexpr int kLaunches = 70000;
  int count = 0;
  for (int i = 0; i < kLaunches; ++i) {
    if (cuda::launch_kernel<one_thread_kernel>(1, 1, nullptr, &count) != cudaSuccess) {
      expect(false, std::string("one_thread_kernel: ") + fastclip::simt::last_error_message());
      return;
    }
  }
  expect(count == kLaunches, "one_thread_kernel ran " + std::to_string(count) + " times");
}

// --- the negative control: an intra-block race the layer and the sanitizer must expose -------

constexpr int kRaceThreads = 64;

// Thread 0 publishes `token` in __shared__ memory for every thread to read, but the
// __syncthreads() between the write and the reads is missing.
__global__ void missing_barrier_kernel(int token, int* out) {
  __shared__ int published;
  if (threadIdx.x == 0) published = token;
  out[threadIdx.x] = published;
}

// Launches Kernel `launches` times, each with a new token from token_base on (so what an earlier
// launch left in its shared memory is wrong), and returns how many launches gave some thread a
// wrong value.
template <auto Kernel>
int wrong_launches(int launches, int token_base, const char* name) {
  int wrong = 0;
  for (int launch = 0; launch < launches; ++launch) {
    const int token = token_base + launch;
    ExactArray<int> out(kRaceThreads);
    expect_launched(cuda::launch_kernel<Kernel>(1, kRaceThreads, nullptr, token, out.data()), name);
    for (int t = 0; t < kRaceThreads; ++t) {
      if (out[t] != token) {
        ++wrong;
        break;
      }
    }
  }
  return wrong;
}

// The same race after a __syncthreads: every thread writes its slot, __syncthreads, then thread
// 0 publishes a value that every thread reads with no barrier between, and a __syncthreads
// ends the phase. ThreadSanitizer must see it: a barrier orders only the phases either side of
// it, not the threads' shared phase after it (--race-after-barrier).
__global__ void race_after_barrier_kernel(int token, int* out) {
  __shared__ int slots[kRaceThreads];
  __shared__ int published;
  slots[threadIdx.x] = token;
  __syncthreads();
  if (threadIdx.x == 0) published = slots[kRaceThreads - 1];
  out[threadIdx.x] = published;  // the missing __syncthreads is before this read
  __syncthreads();
}

// A GPU runs a block's warps in no fixed order, so a missing barrier gives wrong results
// sometimes; the layer releases a block's threads in varied orders (forward, reverse, shuffled)
// so that it does within a few launches. Not under ThreadSanitizer, which reports the race
// itself (the --race run).
void test_missing_barrier_gives_wrong_results() {
#ifdef FASTCLIP_SIMT_TSAN
  std::printf("  (the missing-barrier kernel runs only with --race under ThreadSanitizer)\n");
#else
  constexpr int kLaunches = 6;
  const int wrong = wrong_launches<missing_barrier_kernel>(kLaunches, 1000, "missing_barrier_kernel");
  expect(wrong > 0, "a kernel missing its __syncthreads gave the right result in all " + std::to_string(kLaunches) +
                        " launches: the layer's release orders do not expose the race");
#endif
}

double seconds_since(const std::chrono::steady_clock::time_point& start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace
}  // namespace selftest
}  // namespace fastclip

int main(int argc, char** argv) {
  using namespace fastclip::selftest;
  if (argc == 2 && std::strcmp(argv[1], "--race") == 0) {
    // The negative control of the ThreadSanitizer build: it must report a data race here (and
    // exit with its exitcode, 66 by default).
    const int wrong = wrong_launches<missing_barrier_kernel>(3, 1000, "missing_barrier_kernel");
    std::printf("missing_barrier_kernel: %d of 3 launches gave a wrong result\n", wrong);
    return 0;
  }
  if (argc == 2 && std::strcmp(argv[1], "--race-after-barrier") == 0) {
    // The second negative control: a race between two __syncthreads, after the first.
    const int wrong = wrong_launches<race_after_barrier_kernel>(3, 2000, "race_after_barrier_kernel");
    std::printf("race_after_barrier_kernel: %d of 3 launches gave a wrong result\n", wrong);
    return 0;
  }
  if (argc != 1) {
    std::fprintf(stderr, "usage: %s [--race | --race-after-barrier]\n", argv[0]);
    return 2;
  }
  const struct {
    const char* name;
    void (*run)();
  } parts[] = {{"primitives", test_primitives},
               {"missing barrier", test_missing_barrier_gives_wrong_results},
               {"fiber reuse", test_fiber_reuse},
               {"norm kernels", test_norm_kernels},
               {"elementwise kernels", test_elementwise_kernels},
               {"agc kernel", test_agc_kernel},
               {"stats kernels", test_stats_kernels},
               {"clip step kernels", test_clip_step_kernels},
               {"stable spam kernels", test_stable_spam_kernels}};
  for (const auto& part : parts) {
    const auto start = std::chrono::steady_clock::now();
    const int failures_before = failure_count();
    part.run();
    std::printf("  %-20s %5.2f s%s\n", part.name, seconds_since(start),
                failure_count() > failures_before ? "  FAILED" : "");
  }
  if (failure_count() > 0) {
    std::fprintf(stderr, "simt self-test: %d check(s) failed\n", failure_count());
    return 1;
  }
  std::printf("simt self-test passed: %d checks\n", check_count());
  return 0;
}
