#include "actors/logger.hpp"

#include <memory>

namespace troupe::actors {

spdlog::logger& logger() {
  static const std::shared_ptr<spdlog::logger> log = [] {
    if (auto existing = spdlog::get("actors")) return existing;
    auto created = spdlog::default_logger()->clone("actors");
    try {
      spdlog::register_logger(created);
    } catch (const spdlog::spdlog_ex&) {
      if (auto existing = spdlog::get("actors")) return existing;
    }
    return created;
  }();
  return *log;
}

}  // namespace troupe::actors
