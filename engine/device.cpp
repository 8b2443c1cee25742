#include "engine/device.hpp"

#ifdef TROUPE_HAVE_CUDA
#include "engine/cuda/cuda_device.hpp"
#endif

namespace troupe::engine {

device_info probe_devices() {
  device_info info;
#ifdef TROUPE_HAVE_CUDA
  info.cuda_built = true;
  const cuda::probe_result p = cuda::probe();
  info.n_gpus = p.n_devices;
  info.gpu_name = p.first_name;
  info.note = p.error;
#else
  info.note = "built without CUDA";
#endif
  return info;
}

}  // namespace troupe::engine
