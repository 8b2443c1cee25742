#include "engine/finish_reason.hpp"

#include <ostream>

namespace troupe::engine {

const char* finish_reason_name(finish_reason r) {
  switch (r) {
    case finish_reason::eos: return "eos";
    case finish_reason::length: return "length";
    case finish_reason::context_full: return "context_full";
    case finish_reason::stop: return "stop";
    case finish_reason::cancelled: return "cancelled";
    case finish_reason::deadline: return "deadline";
    case finish_reason::failed: return "failed";
  }
  return "unknown";
}

std::ostream& operator<<(std::ostream& os, finish_reason r) { return os << finish_reason_name(r); }

}  // namespace troupe::engine
