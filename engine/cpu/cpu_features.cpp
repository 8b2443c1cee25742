// Run-time CPU feature detection: the binary is built for baseline x86-64 and switches to the
// AVX2 kernels only on CPUs that have them.
#include <atomic>
#include <cstdlib>

#include "engine/cpu/kernels_cpu.hpp"

namespace troupe::engine::cpu {
namespace {

bool cpu_has_avx2() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
#else
  return false;
#endif
}

std::atomic<bool>& avx2_enabled() {
  static std::atomic<bool> on{cpu_has_avx2() && std::getenv("TROUPE_NO_AVX2") == nullptr};
  return on;
}

}  // namespace

bool has_avx2() { return avx2_enabled().load(std::memory_order_relaxed); }

bool set_avx2(bool on) {
  if (on && !cpu_has_avx2()) return false;
  return avx2_enabled().exchange(on);
}

}  // namespace troupe::engine::cpu
