#include "transport/logger.hpp"

#include <memory>

namespace troupe::transport {

spdlog::logger& logger() {
  static const std::shared_ptr<spdlog::logger> log = [] {
    if (auto existing = spdlog::get("transport")) return existing;
    auto created = spdlog::default_logger()->clone("transport");
    try {
      spdlog::register_logger(created);
    } catch (const spdlog::spdlog_ex&) {
      // Registered by another thread in the meantime: use that one.
      if (auto existing = spdlog::get("transport")) return existing;
    }
    return created;
  }();
  return *log;
}

}  // namespace troupe::transport
