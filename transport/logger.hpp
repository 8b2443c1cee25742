#pragma once
// Named spdlog loggers, one per area ("transport", "actors", ...): named_logger() is the one
// definition every area's logger() uses. transport is the lowest layer that logs (the engine
// does not), so it lives here.
#include <memory>
#include <string>

#include <spdlog/spdlog.h>

namespace troupe::transport {

/// The logger registered under `area`, or a clone of spdlog's default logger (same sinks)
/// registered under that name on first use. Safe to call from several threads.
std::shared_ptr<spdlog::logger> named_logger(const std::string& area);

/// The logger named "transport".
spdlog::logger& logger();

}  // namespace troupe::transport
