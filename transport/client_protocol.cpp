// The client protocol's enum names. Encoding: client_protocol_encode.cpp; decoding:
// client_frame_decode.cpp (client -> server, with validation) and server_frame_decode.cpp; the
// msgpack field readers both use: msgpack_fields.*; UTF-8: utf8.*.
#include "transport/client_protocol.hpp"

namespace troupe::transport {

const char* priority_name(request_priority p) {
  switch (p) {
    case request_priority::interactive: return "interactive";
    case request_priority::batch: return "batch";
  }
  return "interactive";
}

const char* finish_reason_name(finish_reason r) {
  switch (r) {
    case finish_reason::stop: return "stop";
    case finish_reason::length: return "length";
    case finish_reason::stop_string: return "stop_string";
    case finish_reason::cancelled: return "cancelled";
    case finish_reason::deadline: return "deadline";
  }
  return "stop";
}

}  // namespace troupe::transport
