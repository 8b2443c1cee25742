#include "transport/logger.hpp"

namespace troupe::transport {

std::shared_ptr<spdlog::logger> named_logger(const std::string& area) {
  if (auto existing = spdlog::get(area)) return existing;
  auto created = spdlog::default_logger()->clone(area);
  try {
    spdlog::register_logger(created);
  } catch (const spdlog::spdlog_ex&) {
    // Registered by another thread in the meantime: use that one.
    if (auto existing = spdlog::get(area)) return existing;
  }
  return created;
}

spdlog::logger& logger() {
  static const std::shared_ptr<spdlog::logger> log = named_logger("transport");
  return *log;
}

}  // namespace troupe::transport
