// AVX-512 F/BW/VL Q8_0 and Q4_0 kernels (this file alone is compiled with -mavx512f -mavx512bw
// -mavx512vl; callers check cpu::has_avx512() first). The kernels are in matmul_avx512.inc.
#include <immintrin.h>

#include "engine/cpu/avx2_common.hpp"
#include "engine/cpu/kernels_cpu.hpp"

namespace troupe::engine::cpu::avx512 {
#define TROUPE_KERNEL_VNNI 0
#include "engine/cpu/matmul_avx512.inc"
}  // namespace troupe::engine::cpu::avx512
