#include "transport/status_page.hpp"

namespace troupe::transport {

const std::string& status_page_html() {
  static const std::string page = R"HTML(<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>troupe status</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; background: #fafafa; }
h1 { font-size: 1.3em; margin: 0 0 .2em 0; } h2 { font-size: 1.05em; margin: 1.2em 0 .4em 0; }
table { border-collapse: collapse; background: #fff; } td, th { border: 1px solid #ddd; padding: 3px 8px; text-align: right; }
th { background: #f0f0f0; } td.l, th.l { text-align: left; }
.active, .running { color: #176d2c; } .failed { color: #b00020; font-weight: bold; } .recovering { color: #a65f00; }
.active { color: #176d2c; } .draining, .removing { color: #a65f00; } .idle, .standby, .removed { color: #777; }
#error { color: #b00020; font-weight: bold; } .muted { color: #777; }
.charts { display: flex; flex-wrap: wrap; gap: 1em; } .chart { background: #fff; border: 1px solid #ddd; padding: .4em; }
.chart svg { display: block; } .legend span { margin-right: 1em; }
form { margin: .5em 0; }
</style>
</head>
<body>
<h1>troupe <span id="model" class="muted"></span></h1>
<div id="summary" class="muted">loading ...</div>
<div id="error"></div>
<form id="tokenform" style="display:none" onsubmit="setToken(event)">
  admin token: <input id="token" type="password" size="40"> <button>show</button>
  <span class="muted">(kept in this tab only; or open the page as /#token=TOKEN)</span>
</form>
<h2>Replicas</h2>
<table id="replicas"><thead><tr><th class="l">replica</th><th class="l">state</th><th class="l">health</th><th>restarts</th><th>weight</th><th>in flight</th><th>queue</th>
<th>running</th><th>KV used / free</th><th>tok/s (10 s)</th><th>TTFT p50 / p99 ms</th><th>ITL p50 / p99 ms</th>
<th>step ms</th><th>done</th><th>failed</th></tr></thead><tbody></tbody></table>
<ul id="reasons"></ul>
<h2>Throughput and latency <span class="muted">(last minutes)</span></h2>
<div class="charts">
  <div class="chart"><div>tokens / s</div><svg id="chart_tok" width="420" height="160"></svg></div>
  <div class="chart"><div>TTFT p99 (ms)</div><svg id="chart_ttft" width="420" height="160"></svg></div>
  <div class="chart"><div>ITL p99 (ms)</div><svg id="chart_itl" width="420" height="160"></svg></div>
</div>
<div id="legend" class="legend"></div>
<h2>Stages</h2>
<table id="stages"><thead><tr><th class="l">stage</th><th class="l">node</th><th>layers</th><th>pid</th><th>step ms</th>
<th>restarts</th></tr></thead><tbody></tbody></table>
<h2>Nodes</h2>
<table id="nodes"><thead><tr><th class="l">node</th><th class="l">role</th><th class="l">address</th><th class="l">state</th>
<th>pid</th><th>last heartbeat</th></tr></thead><tbody></tbody></table>
<h2>Events</h2>
<ul id="events"></ul>
<script>
"use strict";
const colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"];
let token = "";
const m = location.hash.match(/token=([^&]+)/);
if (m) { token = decodeURIComponent(m[1]); sessionStorage.setItem("troupe_admin_token", token); }
else { token = sessionStorage.getItem("troupe_admin_token") || ""; }
function setToken(e) { e.preventDefault(); token = document.getElementById("token").value;
  sessionStorage.setItem("troupe_admin_token", token); refresh(); }
function esc(s) { return String(s).replace(/[&<>"]/g, c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"})[c]); }
function num(x, d) { return x === null || x === undefined ? "-" : Number(x).toFixed(d); }
function rows(id, html) { document.querySelector("#" + id + " tbody").innerHTML = html.join(""); }
function chart(id, series, key) {
  const svg = document.getElementById(id), W = svg.width.baseVal.value, H = svg.height.baseVal.value, pad = 30;
  let t0 = Infinity, t1 = -Infinity, ymax = 0;
  for (const s of series) for (const p of s.points) { t0 = Math.min(t0, p.unix_ms); t1 = Math.max(t1, p.unix_ms); ymax = Math.max(ymax, p[key]); }
  if (!isFinite(t0)) { svg.innerHTML = '<text x="10" y="20" fill="#777">no samples yet</text>'; return; }
  if (t1 === t0) t1 = t0 + 1; if (ymax <= 0) ymax = 1;
  const x = t => pad + (W - pad - 5) * (t - t0) / (t1 - t0), y = v => H - 18 - (H - 28) * v / ymax;
  let out = '<line x1="' + pad + '" y1="' + (H - 18) + '" x2="' + (W - 5) + '" y2="' + (H - 18) + '" stroke="#aaa"/>' +
    '<text x="2" y="14" font-size="10" fill="#555">' + num(ymax, ymax < 10 ? 1 : 0) + '</text>' +
    '<text x="' + pad + '" y="' + (H - 4) + '" font-size="10" fill="#555">-' + Math.round((t1 - t0) / 1000) + ' s</text>' +
    '<text x="' + (W - 30) + '" y="' + (H - 4) + '" font-size="10" fill="#555">now</text>';
  for (const s of series) {
    const pts = s.points.map(p => x(p.unix_ms).toFixed(1) + "," + y(p[key]).toFixed(1)).join(" ");
    out += '<polyline fill="none" stroke-width="1.5" stroke="' + s.color + '" points="' + pts + '"/>';
  }
  svg.innerHTML = out;
}
function render(s) {
  document.getElementById("error").textContent = "";
  document.getElementById("tokenform").style.display = "none";
  document.getElementById("model").textContent = s.model;
  const up = Math.round(s.uptime_ms / 1000);
  document.getElementById("summary").textContent = s.replicas.filter(r => r.state !== "removed").length + " replica(s), " +
    s.stages.length + " stage(s), " + s.nodes.length + " node(s); up " + up + " s; updated " + new Date(s.unix_ms).toLocaleTimeString();
  rows("replicas", s.replicas.map(r => '<tr><td class="l">replica ' + r.index + '</td><td class="l ' + r.state + '">' + r.state +
    '</td><td class="l ' + esc(r.health) + '" title="' + esc(r.reason) + '">' + esc(r.health) + '</td><td>' + r.restarts +
    '</td><td>' + num(r.weight, 2) + '</td><td>' + r.in_flight + '</td><td>' + r.queue + '</td><td>' + r.running + '</td><td>' +
    r.kv_blocks_used + ' / ' + r.kv_blocks_free + '</td><td>' + num(r.tok_per_s, 1) + '</td><td>' + num(r.ttft_ms.p50, 1) +
    ' / ' + num(r.ttft_ms.p99, 1) + '</td><td>' + num(r.itl_ms.p50, 1) + ' / ' + num(r.itl_ms.p99, 1) + '</td><td>' +
    num(r.step_ms, 2) + '</td><td>' + r.completed + '</td><td>' + r.failures + '</td></tr>'));
  document.getElementById("reasons").innerHTML = s.replicas.filter(r => r.reason && (r.health !== "running" || r.restarts > 0))
    .map(r => '<li>replica ' + r.index + ' <span class="' + esc(r.health) + '">' + (r.health === "running" ? "last rebuilt" : esc(r.health)) +
      '</span>: ' + esc(r.reason) + '</li>').join("");
  rows("stages", s.stages.map(t => '<tr><td class="l">stage ' + t.name + '</td><td class="l">' + esc(t.node) + '</td><td>[' +
    t.layers[0] + ', ' + t.layers[1] + ')</td><td>' + t.pid + '</td><td>' + num(t.step_ms, 2) + '</td><td>' + t.restarts + '</td></tr>'));
  rows("nodes", s.nodes.map(n => '<tr><td class="l">' + esc(n.name) + '</td><td class="l">' + esc(n.role) + '</td><td class="l">' +
    esc(n.address) + '</td><td class="l">' + (n.up ? "up" : "down") + '</td><td>' + n.pid + '</td><td>' +
    (n.last_heartbeat_ms === null ? "-" : n.last_heartbeat_ms + " ms ago") + '</td></tr>'));
  document.getElementById("events").innerHTML = s.events.slice().reverse().slice(0, 20).map(e => '<li>' +
    new Date(e.unix_ms).toLocaleTimeString() + ' <b>' + esc(e.kind) + '</b> replica ' + e.replica + ': ' + esc(e.message) + '</li>').join("");
  const series = s.replicas.filter(r => r.state !== "removed").map(r => ({ name: "replica " + r.index,
    color: colors[r.index % colors.length], points: (s.history || []).filter(h => h.replica === r.index) }));
  chart("chart_tok", series, "tok_per_s"); chart("chart_ttft", series, "ttft_p99_ms"); chart("chart_itl", series, "itl_p99_ms");
  document.getElementById("legend").innerHTML = series.map(x => '<span style="color:' + x.color + '">&#9632; ' + x.name + '</span>').join("");
}
async function refresh() {
  if (!token) { document.getElementById("tokenform").style.display = "";
    document.getElementById("summary").textContent = "this page needs the admin token"; return; }
  try {
    const r = await fetch("/admin/status?history=1", { headers: { "Authorization": "Bearer " + token }, cache: "no-store" });
    const body = await r.json();
    if (!r.ok) { document.getElementById("error").textContent = "HTTP " + r.status + ": " + ((body.error && body.error.message) || "");
      if (r.status === 401 || r.status === 403) document.getElementById("tokenform").style.display = ""; return; }
    render(body);
  } catch (e) { document.getElementById("error").textContent = "cannot reach the server: " + e; }
}
refresh();
setInterval(refresh, 2000);
</script>
</body>
</html>
)HTML";
  return page;
}

}  // namespace troupe::transport
