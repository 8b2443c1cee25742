#pragma once
// The "actors" spdlog logger (control plane).
#include <spdlog/spdlog.h>

namespace troupe::actors {

/// The logger named "actors": the one registered under that name, or a clone of spdlog's default
/// logger registered on first use.
spdlog::logger& logger();

}  // namespace troupe::actors
