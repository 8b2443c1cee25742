#include "transport/error.hpp"

#include <array>

namespace troupe::transport {

namespace {
struct code_name {
  errc code;
  const char* name;
};
constexpr std::array<code_name, 18> code_names{{
    {errc::bad_frame, "bad_frame"},
    {errc::frame_too_large, "frame_too_large"},
    {errc::unsupported_version, "unsupported_version"},
    {errc::unauthorized, "unauthorized"},
    {errc::invalid_request, "invalid_request"},
    {errc::unknown_field, "unknown_field"},
    {errc::prompt_too_long, "prompt_too_long"},
    {errc::max_tokens_too_large, "max_tokens_too_large"},
    {errc::duplicate_request_id, "duplicate_request_id"},
    {errc::overloaded, "overloaded"},
    {errc::cancelled, "cancelled"},
    {errc::deadline_exceeded, "deadline_exceeded"},
    {errc::internal, "internal"},
    {errc::shutting_down, "shutting_down"},
    {errc::timeout, "timeout"},
    {errc::rate_limited, "rate_limited"},
    {errc::io_error, "io_error"},
    {errc::connection_closed, "connection_closed"},
}};
}  // namespace

const char* errc_name(errc code) {
  for (const auto& c : code_names) {
    if (c.code == code) return c.name;
  }
  return "internal";
}

std::optional<errc> errc_from_name(std::string_view name) {
  for (const auto& c : code_names) {
    if (name == c.name) return c.code;
  }
  return std::nullopt;
}

bool closes_connection(errc code) {
  switch (code) {
    case errc::bad_frame:
    case errc::frame_too_large:
    case errc::unsupported_version:
    case errc::unauthorized:
      return true;
    default:
      return false;
  }
}

}  // namespace troupe::transport
