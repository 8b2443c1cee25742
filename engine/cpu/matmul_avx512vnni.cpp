// AVX-512 VNNI Q8_0 and Q4_0 kernels (compiled with -mavx512f -mavx512bw -mavx512vl
// -mavx512vnni; callers check cpu::has_avx512_vnni() first). The kernels are in matmul_avx512.inc.
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "engine/cpu/avx2_common.hpp"
#include "engine/cpu/kernels_cpu.hpp"

namespace troupe::engine::cpu::avx512_vnni {
#define TROUPE_KERNEL_VNNI 1
#include "engine/cpu/matmul_avx512.inc"
}  // namespace troupe::engine::cpu::avx512_vnni
