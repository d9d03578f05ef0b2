#include "kernel_log.h"

#include <atomic>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>

namespace fastclip {
namespace cuda {

void log_kernel_launch(const char* kernel, int grid, int block, bool cooperative) {
  const char* path = std::getenv("FASTCLIP_KERNEL_LOG");
  if (path == nullptr || *path == '\0') return;
  static std::mutex mutex;  // one line at a time from any thread
  std::lock_guard<std::mutex> lock(mutex);
  if (std::FILE* f = std::fopen(path, "a")) {
    std::fprintf(f, "%s grid=%d block=%d%s\n", kernel, grid, block, cooperative ? " cooperative" : "");
    std::fclose(f);
  }
}

namespace {

std::atomic<int64_t> refused_cooperative_launches{0};
std::atomic<int64_t> occupancy_queries{0};

}  // namespace

void count_refused_cooperative_launch() { refused_cooperative_launches.fetch_add(1, std::memory_order_relaxed); }

void count_occupancy_query() { occupancy_queries.fetch_add(1, std::memory_order_relaxed); }

LaunchCounters launch_counters() {
  return LaunchCounters{refused_cooperative_launches.load(std::memory_order_relaxed),
                        occupancy_queries.load(std::memory_order_relaxed)};
}

std::string kernel_name_from_signature(const char* signature) {
  const char* start = std::strstr(signature, "Kernel = ");
  if (start == nullptr) return signature;
  start += std::strlen("Kernel = ");
  if (*start == '&') ++start;
  // The name ends at the ';' or ']' that closes it, outside any template brackets.
  std::string name;
  int depth = 0;
  for (const char* c = start; *c; ++c) {
    if (depth == 0 && (*c == ';' || *c == ']')) break;
    if (*c == '<') ++depth;
    if (*c == '>') --depth;
    name += *c;
  }
  // Drop qualifiers: every "word::" (fastclip::, cuda::, {anonymous}::, NormKind::).
  std::string out;
  size_t word_start = 0;
  for (size_t i = 0; i < name.size(); ++i) {
    if (name.compare(i, 2, "::") == 0) {
      out.resize(word_start);
      ++i;
      continue;
    }
    const char c = name[i];
    out += c;
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '{' || c == '}')) word_start = out.size();
  }
  return out;
}

}  // namespace cuda
}  // namespace fastclip
