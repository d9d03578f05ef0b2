// simt::launch: the blocks of a grid on a few OS threads (all at once for a cooperative launch),
// each block's threads as fibers (block_runner.h).
#include <atomic>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "block_runner.h"
#include "grid_barrier.h"
#include "runtime.h"

namespace fastclip {
namespace simt {
namespace {

constexpr int kDefaultMultiprocessors = 4;
constexpr int kBlocksPerMultiprocessor = 2;  // what the layer lets a cooperative launch have resident

thread_local std::string last_error;
// This host thread's launches run one at a time: their runners may reuse one another's fibers.
thread_local TsanFiberPool tsan_fibers;
std::atomic<uint64_t> launches{0};

cudaError_t fail(cudaError_t error, const LaunchShape& shape, const std::string& why) {
  last_error = std::string(shape.kernel ? shape.kernel : "kernel") + " (grid=" + std::to_string(shape.grid) +
               " block=" + std::to_string(shape.block) + "): " + why;
  return error;
}

// The integer `name` holds, from `low` to `high`; `fallback` where it is unset or empty.
int environment_integer(const char* name, int low, int high, int fallback) {
  const char* text = std::getenv(name);
  if (text == nullptr || *text == '\0') return fallback;
  char* end = nullptr;
  const long value = std::strtol(text, &end, 10);
  if (*end != '\0' || value < low || value > high) {
    throw std::invalid_argument(std::string(name) + " must be an integer from " + std::to_string(low) + " to " +
                                std::to_string(high) + ", got '" + text + "'");
  }
  return static_cast<int>(value);
}

}  // namespace

int multiprocessor_count() {
  static const int count = environment_integer("FASTCLIP_SIMT_SMS", 1, 64, kDefaultMultiprocessors);
  return count;
}

int max_cooperative_blocks() { return kBlocksPerMultiprocessor * multiprocessor_count(); }

int context_multiprocessor_count() {
  static const int count = environment_integer("FASTCLIP_SIMT_CONTEXT_SMS", 1, 64, multiprocessor_count());
  return count;
}

cudaError_t query_cooperative_blocks(int* blocks) {
  static const int failing = environment_integer("FASTCLIP_SIMT_FAILED_QUERIES", 0, 1000000, 0);
  static std::atomic<int> queries{0};
  if (queries.fetch_add(1) < failing) return cudaErrorUnknown;
  *blocks = max_cooperative_blocks();
  return cudaSuccess;
}

const char* last_error_message() { return last_error.c_str(); }

cudaError_t launch(const LaunchShape& shape, const std::function<void()>& body) {
  last_error.clear();
  if (shape.grid == 0 || shape.block == 0 || shape.block > kMaxBlockThreads) {
    return fail(cudaErrorInvalidConfiguration, shape, "grid and block must be positive, block at most 1024");
  }
  if (shape.cooperative && shape.grid > static_cast<unsigned>(max_cooperative_blocks())) {
    return fail(cudaErrorCooperativeLaunchTooLarge, shape,
                "a cooperative grid may have at most " + std::to_string(max_cooperative_blocks()) + " blocks");
  }
  const int context_blocks = kBlocksPerMultiprocessor * context_multiprocessor_count();
  if (shape.cooperative && shape.grid > static_cast<unsigned>(context_blocks)) {
    return fail(cudaErrorCooperativeLaunchTooLarge, shape,
                "the context's " + std::to_string(context_multiprocessor_count()) +
                    " SMs (FASTCLIP_SIMT_CONTEXT_SMS) hold at most " + std::to_string(context_blocks) +
                    " blocks of a cooperative grid");
  }
  const unsigned workers =
      shape.cooperative ? shape.grid : std::min<unsigned>(shape.grid, static_cast<unsigned>(multiprocessor_count()));
  GridBarrier grid_barrier(shape.grid);
  std::atomic<unsigned> next_block{0};
  std::atomic<bool> failed{false};
  std::mutex failure_mutex;
  std::string failure;
  bool failure_is_consequence = false;
  // The first failure is kept, but a block's own error (the root cause) replaces a block's
  // "grid_sync failed", which only says that another block broke the grid barrier.
  auto record = [&](const std::string& why) {
    const bool consequence = why.rfind(kGridSyncFailed, 0) == 0;
    std::lock_guard<std::mutex> lock(failure_mutex);
    if (failure.empty() || (failure_is_consequence && !consequence)) {
      failure = why;
      failure_is_consequence = consequence;
    }
    failed.store(true);
  };
  const uint64_t launch_number = launches++;
  TsanFiberPool* const fibers = &tsan_fibers;  // the host thread's, taken here: `work` runs on other threads
  auto work = [&](unsigned worker) {
    try {
      BlockRunner runner(shape, body, shape.cooperative ? &grid_barrier : nullptr, launch_number + worker, fibers);
      if (shape.cooperative) {
        const std::string why = runner.run(worker);
        if (!why.empty()) record(why);
        return;
      }
      for (unsigned b = next_block++; b < shape.grid && !failed.load(); b = next_block++) {
        const std::string why = runner.run(b);
        if (!why.empty()) {
          record(why);
          return;
        }
      }
    } catch (const std::exception& e) {  // out of memory for stacks, or a fiber that could not start
      if (shape.cooperative) grid_barrier.break_barrier("block " + std::to_string(worker) + " failed: " + e.what());
      record(e.what());
    } catch (...) {
      if (shape.cooperative) grid_barrier.break_barrier("block " + std::to_string(worker) + " failed");
      record("a block's runner threw a non-standard exception");
    }
  };
  if (workers == 1) {
    work(0);
  } else {
    std::vector<std::thread> threads;
    threads.reserve(workers);
    // A worker that cannot start fails the launch: the barrier breaks (the started workers of a
    // cooperative launch would wait for it), and the started ones are joined.
    try {
      for (unsigned w = 0; w < workers; ++w) threads.emplace_back(work, w);
    } catch (const std::exception& e) {
      grid_barrier.break_barrier(std::string("could not start the block threads: ") + e.what());
      record(std::string("could not start the block threads: ") + e.what());
    } catch (...) {
      grid_barrier.break_barrier("could not start the block threads");
      record("could not start the block threads");
    }
    for (std::thread& t : threads) t.join();
  }
  fibers->end_launch();
  if (!failure.empty()) return fail(cudaErrorLaunchFailure, shape, failure);
  return cudaSuccess;
}

}  // namespace simt
}  // namespace fastclip
