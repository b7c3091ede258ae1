// Overview: every replica and every GPU, polled from the gateway's /services and /gpu-stats every 2 s.
// Polling, not server-sent events: EventSource cannot send the Authorization header the key needs, and
// the registry's own snapshot changes at its poll interval anyway, so a 2 s poll shows every change.
import { api, fmt, h, poll, table } from "./api.js";

const NUMERIC = new Set(["in flight", "served", "failures", "probe ms", "p50 ms", "p95 ms", "req/s"]);

function health(row) {
  if (row.healthy && row.usable) return h("span", { class: "ok" }, "healthy");
  if (row.healthy) return h("span", { class: "warn" }, `not routed: ${row.gpu_problem || "circuit " + row.circuit.state}`);
  return h("span", { class: "bad" }, `unhealthy: ${row.reason || "no reason given"}`);
}

function replicaRows(services) {
  return services.data.map((row) => [
    row.type, row.model, row.url, health(row), row.circuit.state, row.in_flight, fmt(row.recent.p50_ms, 1),
    fmt(row.recent.p95_ms, 1), fmt(row.recent.requests_per_s, 2), row.served, row.failures, fmt(row.latency_ms, 1),
    row.source,
  ]);
}

const noGpu = (reason) => (reason && reason.startsWith("no GPU") ? reason : `no GPU: ${reason || "none found"}`);

function gpuRows(stats) {
  const rows = [];
  for (const row of stats.data) {
    const holder = `${row.service_id || row.model || "?"}: ${row.model || "?"} (${row.url})`;
    if (row.error) rows.push([holder, h("span", { class: "warn" }, row.error), "", "", ""]);
    else if (!row.stats.available) rows.push([holder, h("span", { class: "muted" }, noGpu(row.stats.reason)), "", "", ""]);
    else for (const gpu of row.stats.gpus) {
      rows.push([holder, `GPU ${gpu.index}: ${gpu.name}`, `${fmt(gpu.utilization_percent)} %`,
        `${fmt(gpu.memory_used_mb)} / ${fmt(gpu.memory_total_mb)} MB`, `${fmt(gpu.temperature_c)} °C`]);
    }
  }
  return rows;
}

export function render(element) {
  const summary = h("p", { id: "overview-summary", class: "muted" }, "Loading…");
  const replicas = h("div", { id: "replicas" });
  const gpus = h("div", { id: "gpus" });
  const problem = h("p", { class: "error" });
  element.append(h("h1", {}, "Overview"), summary, problem, h("h2", {}, "Services and replicas"), replicas,
    h("h2", {}, "GPUs"), gpus);
  return poll(async () => {
    const [services, stats] = await Promise.all([api("/services"), api("/gpu-stats")]);
    const healthy = services.data.filter((row) => row.healthy).length;
    summary.textContent = `${services.data.length} replicas, ${healthy} healthy; routing policy ` +
      `${services.policy}; checked ${new Date().toLocaleTimeString()} (refreshes every 2 s)`;
    replicas.replaceChildren(table(["type", "model", "URL", "health", "circuit", "in flight", "p50 ms", "p95 ms",
      "req/s", "served", "failures", "probe ms", "source"], replicaRows(services), NUMERIC),
    h("p", { class: "muted" }, "p50/p95 latency and requests/s: this gateway's answers from each replica in the last minute."));
    const rows = gpuRows(stats);
    gpus.replaceChildren(rows.length ? table(["worker", "GPU", "utilization", "memory", "temperature"], rows)
      : h("p", { class: "muted" }, "No worker reports GPU facts."));
    problem.textContent = "";
  }, 2000, (err) => { problem.textContent = `Could not refresh: ${err.message}`; });
}
