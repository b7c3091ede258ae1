// Overview: every replica and every GPU, polled from the gateway's /services and /gpu-stats.
import { api, fmt, h, poll, table } from "./api.js";

const NUMERIC = new Set(["in flight", "served", "failures", "latency ms"]);

function health(row) {
  if (row.healthy && row.usable) return h("span", { class: "ok" }, "healthy");
  if (row.healthy) return h("span", { class: "warn" }, `not routed: ${row.gpu_problem || "circuit " + row.circuit.state}`);
  return h("span", { class: "bad" }, `unhealthy: ${row.reason || "no reason given"}`);
}

function replicaRows(services) {
  return services.data.map((row) => [
    row.type, row.model, row.url, health(row), row.circuit.state, row.in_flight, row.served, row.failures,
    fmt(row.latency_ms, 1), row.source,
  ]);
}

const noGpu = (reason) => (reason && reason.startsWith("no GPU") ? reason : `no GPU: ${reason || "none found"}`);

function gpuRows(stats) {
  const rows = [];
  for (const row of stats.data) {
    const holder = `${row.model || "?"} (${row.url})`;
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
    replicas.replaceChildren(table(["type", "model", "URL", "health", "circuit", "in flight", "served",
      "failures", "latency ms", "source"], replicaRows(services), NUMERIC));
    const rows = gpuRows(stats);
    gpus.replaceChildren(rows.length ? table(["worker", "GPU", "utilization", "memory", "temperature"], rows)
      : h("p", { class: "muted" }, "No worker reports GPU facts."));
    problem.textContent = "";
  }, 2000, (err) => { problem.textContent = `Could not refresh: ${err.message}`; });
}
