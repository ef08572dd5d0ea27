// Run-time choice of the instruction set for the CPU hot loops. Each loop file (a .inc) is
// compiled several times, once per level, inside namespaces isa_base / isa_avx2 / isa_avx512
// (see SP_DEFINE_ISA_VARIANTS), and the widest level the CPU supports is called. The environment
// variable SPARSEPAI_CPU_ISA=base|avx2|avx512 caps the level (read once); the C++ tests run every
// level.
#pragma once

#include <cstdlib>
#include <cstring>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__CUDACC__) && !defined(SP_NO_ISA_DISPATCH)
#define SP_HAVE_ISA_DISPATCH 1
#else
#define SP_HAVE_ISA_DISPATCH 0
#endif

namespace sparsepai {
namespace core {

// 0 = baseline, 1 = AVX2, 2 = AVX-512 (F, BW, VL).
inline int isa_level() {
#if SP_HAVE_ISA_DISPATCH
  static const int level = [] {
    int have = 0;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) have = 1;
    if (have == 1 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl"))
      have = 2;
    const char* cap = std::getenv("SPARSEPAI_CPU_ISA");
    if (cap && std::strcmp(cap, "base") == 0) return 0;
    if (cap && std::strcmp(cap, "avx2") == 0) return have < 1 ? have : 1;
    return have;
  }();
  return level;
#else
  return 0;
#endif
}

}  // namespace core
}  // namespace sparsepai

// Calls isa_<level>::fn(args...) for the widest available level.
#if SP_HAVE_ISA_DISPATCH
#define SP_ISA_DISPATCH(fn, ...)                                                     \
  (::sparsepai::core::isa_level() >= 2   ? isa_avx512::fn(__VA_ARGS__)               \
   : ::sparsepai::core::isa_level() >= 1 ? isa_avx2::fn(__VA_ARGS__)                 \
                                         : isa_base::fn(__VA_ARGS__))
// Bracket a block of code compiled for one level.
#define SP_ISA_BEGIN_AVX2 \
  _Pragma("GCC push_options") _Pragma("GCC target(\"avx2,fma,bmi,bmi2,popcnt\")")
#define SP_ISA_BEGIN_AVX512                 \
  _Pragma("GCC push_options")               \
      _Pragma("GCC target(\"avx512f,avx512bw,avx512vl,avx2,fma,bmi,bmi2,popcnt\")")
#define SP_ISA_END _Pragma("GCC pop_options")
#else
#define SP_ISA_DISPATCH(fn, ...) isa_base::fn(__VA_ARGS__)
#endif
