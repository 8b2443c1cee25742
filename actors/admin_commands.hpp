#pragma once
// The ADMIN CONSOLE's command words ("drain 0", "weight 2 0.05", ...) to the ADMIN actor's typed
// messages, and their replies to text and JSON: what the client protocol's admin frames and the
// HTTP status page share. The grammar is in admin_help() and docs/operations.md.
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include <caf/fwd.hpp>
#include <nlohmann/json_fwd.hpp>

#include "actors/messages.hpp"

namespace troupe::actors {

/// How a command went.
struct admin_outcome {
  bool ok = false;
  std::string code;     // when !ok: unauthorized, bad_argument, refused, not_supported, failed, unknown_command
  std::string message;  // for people
  std::string json;     // for scripts (status, requests, config, audit, rollback-policy); may be empty
};

/// The commands, one line each, for `help`.
const std::vector<std::pair<std::string, std::string>>& admin_help();

/// `got` is the admin token `want` (constant time in the token's length); never for an empty `want`.
bool admin_token_matches(const std::string& want, std::string_view got);

/// Runs one command through `admin` from a short-lived actor; `done` is called once, on a CAF
/// thread.
void run_admin_command(caf::actor_system& sys, const admin_actor& admin, admin_caller caller,
                       std::vector<std::string> words, std::function<void(admin_outcome)> done);

/// status as JSON: {"model", "unix_ms", "uptime_ms", "nodes": [...], "replicas": [...],
/// "stages": [...], "events": [...], "rollback": {...}, "history": [...] (when asked)}.
nlohmann::json status_json(const cluster_status& s);

}  // namespace troupe::actors
