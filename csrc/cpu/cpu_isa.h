// The CPU loops' instruction sets: on x86-64 each loop is compiled three times (baseline, AVX2 +
// FMA + F16C, AVX-512) from one forced-inline body, and cpu_isa() picks the widest the CPU has
// once at run time (FASTCLIP_CPU_ISA=generic|avx2 caps it).
#pragma once

#include <cstdint>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define FASTCLIP_HAVE_AVX2_VARIANT 1
#define FASTCLIP_TARGET_AVX2 __attribute__((target("avx2,fma,f16c")))
#define FASTCLIP_TARGET_AVX512 \
  __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c,prefer-vector-width=512")))
#else
#define FASTCLIP_HAVE_AVX2_VARIANT 0
#endif

namespace fastclip {
namespace cpu {

enum class Isa { kGeneric, kAvx2, kAvx512 };

Isa cpu_isa();

// The one dispatch over instruction sets: generic(args...), avx2(args...) or avx512(args...),
// whichever cpu_isa() picked (each variant is the same forced-inline body compiled for its target).
#if FASTCLIP_HAVE_AVX2_VARIANT
#define FASTCLIP_BY_ISA(generic, avx2, avx512, ...)                                  \
  (::fastclip::cpu::cpu_isa() == ::fastclip::cpu::Isa::kAvx512 ? avx512(__VA_ARGS__) \
   : ::fastclip::cpu::cpu_isa() == ::fastclip::cpu::Isa::kAvx2 ? avx2(__VA_ARGS__)   \
                                                               : generic(__VA_ARGS__))
#else
#define FASTCLIP_BY_ISA(generic, avx2, avx512, ...) generic(__VA_ARGS__)
#endif

// The instruction sets this build has kernels for ("generic", and "avx2", "avx512" on x86-64),
// and the one in use (the widest the CPU has, capped by FASTCLIP_CPU_ISA).
const char* const* compiled_isas(int* count);
const char* isa_in_use();

// The largest CPU cache Linux reports (sysfs), in bytes; 0 when unknown. Read once.
int64_t last_level_cache_bytes();

}  // namespace cpu
}  // namespace fastclip
