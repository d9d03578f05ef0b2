// What this CPU is, read once: the instruction set the CPU loops use (cpu_isa.h) and the size of
// its last-level cache (cpu_parallel.h's chunk order), and the build's variants (build_info).
#include "cpu_isa.h"

#include <cstdint>
#include <cstdlib>
#include <fstream>
#include <string>

namespace fastclip {
namespace cpu {

#if FASTCLIP_HAVE_AVX2_VARIANT
namespace {
Isa detect_isa() {
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
  const bool avx512 = avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  Isa best = avx512 ? Isa::kAvx512 : avx2 ? Isa::kAvx2 : Isa::kGeneric;
  // FASTCLIP_CPU_ISA=generic|avx2|avx512 caps the choice (tests compare the variants).
  if (const char* cap = std::getenv("FASTCLIP_CPU_ISA")) {
    const std::string want(cap);
    if (want == "generic") best = Isa::kGeneric;
    if (want == "avx2" && best == Isa::kAvx512) best = Isa::kAvx2;
  }
  return best;
}
}  // namespace
#else
namespace {
Isa detect_isa() { return Isa::kGeneric; }
}  // namespace
#endif

Isa cpu_isa() {
  static const Isa isa = detect_isa();
  return isa;
}

namespace {

int64_t read_last_level_cache_bytes() {
  int64_t largest = 0;
  for (int index = 0; index < 8; ++index) {
    const std::string path = "/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(index) + "/size";
    std::ifstream file(path);
    int64_t size = 0;
    std::string unit;
    if (!(file >> size)) continue;
    file >> unit;  // "K", "M" or "G" (older kernels: "32K" reads as 32 then "K")
    const int64_t scale = unit == "K" ? (1 << 10) : unit == "M" ? (1 << 20) : unit == "G" ? (1 << 30) : 1;
    if (size * scale > largest) largest = size * scale;
  }
  return largest;
}

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::kAvx512: return "avx512";
    case Isa::kAvx2: return "avx2";
    case Isa::kGeneric: break;
  }
  return "generic";
}

}  // namespace

const char* const* compiled_isas(int* count) {
#if FASTCLIP_HAVE_AVX2_VARIANT
  static const char* const names[] = {"generic", "avx2", "avx512"};
#else
  static const char* const names[] = {"generic"};
#endif
  *count = static_cast<int>(sizeof(names) / sizeof(names[0]));
  return names;
}

const char* isa_in_use() { return isa_name(cpu_isa()); }

int64_t last_level_cache_bytes() {
  static const int64_t bytes = read_last_level_cache_bytes();
  return bytes;
}

}  // namespace cpu
}  // namespace fastclip
