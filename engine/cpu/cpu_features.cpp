// Run-time CPU feature detection: the binary is built for baseline x86-64 and picks its kernel
// variant once, by cpuid: AVX-512 (F/BW/VL, with VNNI where present) > AVX2 (+FMA, F16C) >
// scalar. TROUPE_CPU=scalar|avx2|avx512 asks for a lower variant (tests, benchmarks).
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "engine/cpu/kernels_cpu.hpp"

namespace troupe::engine::cpu {
namespace {

struct features {
  bool avx2 = false;         // AVX2 + FMA + F16C
  bool avx512 = false;       // AVX-512 F + BW + VL (+ the AVX2 set)
  bool avx512_vnni = false;  // and AVX-512 VNNI
};

features probe() {
  features f;
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  f.avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
  f.avx512 = f.avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vl");
  f.avx512_vnni = f.avx512 && __builtin_cpu_supports("avx512vnni");
#endif
  return f;
}

const features& cpu() {
  static const features f = probe();
  return f;
}

isa best_of(const features& f) { return f.avx512 ? isa::avx512 : f.avx2 ? isa::avx2 : isa::scalar; }

// The variant at start: the best the CPU has, or TROUPE_CPU when it names one the CPU has (the
// older TROUPE_NO_AVX2 means scalar). A bad or unsupported request is said once on stderr.
isa initial() {
  const isa best = best_of(cpu());
  const char* env = std::getenv("TROUPE_CPU");
  if (env == nullptr) return std::getenv("TROUPE_NO_AVX2") != nullptr ? isa::scalar : best;
  const auto wanted = parse_isa(env);
  if (!wanted) {
    std::fprintf(stderr, "troupe: TROUPE_CPU=%s is not one of scalar, avx2, avx512: using %s\n", env, isa_name(best));
    return best;
  }
  if (*wanted > best) {
    std::fprintf(stderr, "troupe: TROUPE_CPU=%s: this CPU lacks it: using %s\n", env, isa_name(best));
    return best;
  }
  return *wanted;
}

std::atomic<isa>& active() {
  static std::atomic<isa> a{initial()};
  return a;
}

}  // namespace

const char* isa_name(isa v) {
  switch (v) {
    case isa::scalar: return "scalar";
    case isa::avx2: return "avx2";
    case isa::avx512: return "avx512";
  }
  return "?";
}

std::optional<isa> parse_isa(std::string_view name) {
  for (isa v : {isa::scalar, isa::avx2, isa::avx512}) {
    if (name == isa_name(v)) return v;
  }
  return std::nullopt;
}

isa detected_isa() { return best_of(cpu()); }
isa active_isa() { return active().load(std::memory_order_relaxed); }

bool set_isa(isa v) {
  if (v > detected_isa()) return false;
  active().store(v);
  return true;
}

bool has_avx2() { return active_isa() >= isa::avx2; }
bool has_avx512() { return active_isa() >= isa::avx512; }
bool has_avx512_vnni() { return has_avx512() && cpu().avx512_vnni; }

const char* variant_name() {
  if (has_avx512_vnni()) return "avx512-vnni";
  return isa_name(active_isa());
}

}  // namespace troupe::engine::cpu
