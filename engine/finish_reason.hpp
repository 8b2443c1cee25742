#pragma once
// Why a sequence stopped producing tokens: one definition for the engine's generate(), the
// SCHEDULER's batch policy and the ROUTER. The client protocol has its own wire enum
// (transport::finish_reason: names that never change meaning), mapped from this one in one place,
// actors/stream_relay.cpp.
#include <cstdint>
#include <iosfwd>

namespace troupe::engine {

enum class finish_reason : uint8_t {
  eos,           // the model produced an end token (the stop rule's end ids)
  length,        // max_tokens reached
  context_full,  // the context (ctx_size positions) is full
  stop,          // a stop token or stop string ended it (generate: the caller's callback said stop)
  cancelled,     // cancelled by the client (or its disconnect)
  deadline,      // the request's deadline passed
  failed,        // a step failed (stage error or timeout)
};

/// "eos", "length", "context_full", "stop", "cancelled", "deadline", "failed".
const char* finish_reason_name(finish_reason r);
/// Writes finish_reason_name(r) (logs, test messages).
std::ostream& operator<<(std::ostream& os, finish_reason r);

}  // namespace troupe::engine
