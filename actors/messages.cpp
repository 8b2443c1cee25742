#include "actors/messages.hpp"

#include <caf/all.hpp>

namespace troupe::actors {

namespace {
constexpr caf::atom_value error_category = caf::atom("troupe");
}

const char* serve_errc_name(serve_errc c) {
  switch (c) {
    case serve_errc::none: return "none";
    case serve_errc::invalid_request: return "invalid_request";
    case serve_errc::overloaded: return "overloaded";
    case serve_errc::too_long: return "too_long";
    case serve_errc::cancelled: return "cancelled";
    case serve_errc::deadline_exceeded: return "deadline_exceeded";
    case serve_errc::failed: return "failed";
    case serve_errc::shutting_down: return "shutting_down";
    case serve_errc::internal: return "internal";
  }
  return "unknown";
}

caf::error make_error(serve_errc c, std::string message) {
  return caf::error(static_cast<uint8_t>(c), error_category, caf::make_message(std::move(message)));
}

serve_errc serve_errc_of(const caf::error& e) {
  if (e.category() != error_category) return serve_errc::internal;
  return static_cast<serve_errc>(e.code());
}

std::string describe(const caf::error& e) {
  if (e.category() != error_category) return caf::to_string(e);
  std::string out = serve_errc_name(static_cast<serve_errc>(e.code()));
  if (e.context().match_elements<std::string>()) {
    const auto& m = e.context().get_as<std::string>(0);
    if (!m.empty()) out += ": " + m;
  }
  return out;
}

}  // namespace troupe::actors
