#pragma once
// The "transport" spdlog logger.
#include <spdlog/spdlog.h>

namespace troupe::transport {

/// The logger named "transport": the one registered under that name, or a clone of spdlog's
/// default logger (same sinks) registered on first use.
spdlog::logger& logger();

}  // namespace troupe::transport
