#include <cuda_runtime.h>

#include "engine/cuda/cuda_device.hpp"

namespace troupe::engine::cuda {

probe_result probe() {
  probe_result r;
  int n = 0;
  const cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess) {
    r.error = cudaGetErrorString(err);
    (void)cudaGetLastError();  // clear the sticky error
    return r;
  }
  r.n_devices = n;
  if (n > 0) {
    cudaDeviceProp prop{};
    if (cudaGetDeviceProperties(&prop, 0) == cudaSuccess) r.first_name = prop.name;
  } else {
    r.error = "no CUDA devices";
  }
  return r;
}

}  // namespace troupe::engine::cuda
