#pragma once
// Which devices this process can run on. CPU always; CUDA GPUs when the CUDA backend is built and
// a driver + GPU are present (without a GPU, any CUDA error or 0 devices means "CPU only").
#include <string>

namespace troupe::engine {

struct device_info {
  bool cuda_built = false;  // compiled with the CUDA backend
  int n_gpus = 0;           // usable GPUs found at run time
  std::string gpu_name;     // first GPU's name, if any
  std::string note;         // why there are no GPUs (driver error text), if that is the case
};

device_info probe_devices();

}  // namespace troupe::engine
