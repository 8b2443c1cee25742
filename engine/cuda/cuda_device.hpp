#pragma once
// Plain header shared by device.cpp and the CUDA side (no CUDA types here).
#include <string>

namespace troupe::engine::cuda {

struct probe_result {
  int n_devices = 0;
  std::string first_name;
  std::string error;  // text of the CUDA error when no device could be used
};

/// Never throws or aborts: no driver / no GPU gives n_devices == 0 and the error text.
probe_result probe();

}  // namespace troupe::engine::cuda
