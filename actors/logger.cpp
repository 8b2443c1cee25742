#include "actors/logger.hpp"

#include "transport/logger.hpp"

namespace troupe::actors {

spdlog::logger& logger() {
  static const std::shared_ptr<spdlog::logger> log = transport::named_logger("actors");
  return *log;
}

}  // namespace troupe::actors
