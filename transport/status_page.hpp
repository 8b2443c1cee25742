#pragma once
// The status page the HTTP API serves at GET / (docs/operations.md, "The status page"): plain
// HTML with a small inline script that polls GET /admin/status (with the admin token) and draws
// the replicas, stages, nodes, events and per-replica throughput / latency charts (SVG). No build
// step; nothing is fetched from anywhere but this server.
#include <string>

namespace troupe::transport {

const std::string& status_page_html();

}  // namespace troupe::transport
