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
    case serve_errc::interrupted: return "interrupted";
  }
  return "unknown";
}

void add_message_types(caf::actor_system_config& cfg) {
  cfg.add_message_type<request_id>("troupe::request_id");
  cfg.add_message_type<sequence_spec>("troupe::sequence_spec");
  cfg.add_message_type<planned_seq>("troupe::planned_seq");
  cfg.add_message_type<sampled_token>("troupe::sampled_token");
  cfg.add_message_type<finished_seq>("troupe::finished_seq");
  cfg.add_message_type<serve_request>("troupe::serve_request");
  cfg.add_message_type<stream_chunk>("troupe::stream_chunk");
  cfg.add_message_type<stream_end>("troupe::stream_end");
  cfg.add_message_type<sequence_request>("troupe::sequence_request");
  cfg.add_message_type<scheduler_stats>("troupe::scheduler_stats");
  cfg.add_message_type<new_sequence>("troupe::new_sequence");
  cfg.add_message_type<step_request>("troupe::step_request");
  cfg.add_message_type<hidden_states>("troupe::hidden_states");
  cfg.add_message_type<step_result>("troupe::step_result");
  cfg.add_message_type<replica_health>("troupe::replica_health");
  cfg.add_message_type<std::vector<replica_health>>("std::vector<troupe::replica_health>");
  cfg.add_message_type<replica_report>("troupe::replica_report");
  cfg.add_message_type<std::vector<stage_actor>>("std::vector<troupe::stage_actor>");
  cfg.add_message_type<replica_actor>("troupe::replica_actor");
  cfg.add_message_type<supervisor_actor>("troupe::supervisor_actor");
  cfg.add_message_type<token_batch>("troupe::token_batch");
  // Nodes of a multi-host cluster (handles that travel as message elements are types too).
  cfg.add_message_type<node_hello>("troupe::node_hello");
  cfg.add_message_type<stage_placement>("troupe::stage_placement");
  cfg.add_message_type<placed_stage>("troupe::placed_stage");
  cfg.add_message_type<chain_generations>("troupe::chain_generations");
  cfg.add_message_type<node_state>("troupe::node_state");
  cfg.add_message_type<std::vector<node_state>>("troupe::node_states");
  cfg.add_message_type<stage_actor>("troupe::stage_actor");
  cfg.add_message_type<token_sink_actor>("troupe::token_sink_actor");
  cfg.add_message_type<node_actor>("troupe::node_actor");
  cfg.add_message_type<head_actor>("troupe::head_actor");
  cfg.add_message_type<local_node_actor>("troupe::local_node_actor");
  // The ADMIN CONSOLE.
  cfg.add_message_type<admin_caller>("troupe::admin_caller");
  cfg.add_message_type<replica_route>("troupe::replica_route");
  cfg.add_message_type<std::vector<replica_route>>("troupe::replica_routes");
  cfg.add_message_type<request_info>("troupe::request_info");
  cfg.add_message_type<std::vector<request_info>>("troupe::request_infos");
  cfg.add_message_type<rollback_policy>("troupe::rollback_policy");
  cfg.add_message_type<admin_event>("troupe::admin_event");
  cfg.add_message_type<std::vector<admin_event>>("troupe::admin_events");
  cfg.add_message_type<cluster_status>("troupe::cluster_status");
  cfg.add_message_type<status_options>("troupe::status_options");
  cfg.add_message_type<rollout_plan>("troupe::rollout_plan");
  cfg.add_message_type<replica_add_plan>("troupe::replica_add_plan");
  cfg.add_message_type<audit_entry>("troupe::audit_entry");
  cfg.add_message_type<std::vector<audit_entry>>("troupe::audit_entries");
  cfg.add_message_type<scheduler_actor>("troupe::scheduler_actor");
  cfg.add_error_category(caf::atom("admin"), [](uint8_t code, caf::atom_value, const caf::message& ctx) {
    std::string s = std::string("admin: ") + admin_errc_name(static_cast<admin_errc>(code));
    if (ctx.match_elements<std::string>() && !ctx.get_as<std::string>(0).empty()) {
      s += " (" + ctx.get_as<std::string>(0) + ")";
    }
    return s;
  });
  cfg.add_error_category(caf::atom("troupe"), [](uint8_t code, caf::atom_value, const caf::message& ctx) {
    std::string s = std::string("troupe: ") + serve_errc_name(static_cast<serve_errc>(code));
    if (ctx.match_elements<std::string>() && !ctx.get_as<std::string>(0).empty()) {
      s += " (" + ctx.get_as<std::string>(0) + ")";
    }
    return s;
  });
}

const char* admin_errc_name(admin_errc c) {
  switch (c) {
    case admin_errc::none: return "none";
    case admin_errc::unauthorized: return "unauthorized";
    case admin_errc::bad_argument: return "bad_argument";
    case admin_errc::refused: return "refused";
    case admin_errc::not_supported: return "not_supported";
    case admin_errc::failed: return "failed";
  }
  return "unknown";
}

caf::error make_error(admin_errc c, std::string message) {
  return caf::error(static_cast<uint8_t>(c), caf::atom("admin"), caf::make_message(std::move(message)));
}

caf::error make_error(serve_errc c, std::string message) {
  return caf::error(static_cast<uint8_t>(c), error_category, caf::make_message(std::move(message)));
}

serve_errc serve_errc_of(const caf::error& e) {
  if (e.category() != error_category) return serve_errc::internal;
  return static_cast<serve_errc>(e.code());
}

std::string describe(const caf::error& e) {
  if (e.category() == caf::atom("admin")) {
    std::string out = admin_errc_name(static_cast<admin_errc>(e.code()));
    if (e.context().match_elements<std::string>() && !e.context().get_as<std::string>(0).empty()) {
      out += ": " + e.context().get_as<std::string>(0);
    }
    return out;
  }
  if (e.category() != error_category) return caf::to_string(e);
  std::string out = serve_errc_name(static_cast<serve_errc>(e.code()));
  if (e.context().match_elements<std::string>()) {
    const auto& m = e.context().get_as<std::string>(0);
    if (!m.empty()) out += ": " + m;
  }
  return out;
}

}  // namespace troupe::actors
