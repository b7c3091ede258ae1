// Usage: requests, tokens, errors, latency and TTFT over time by model or by key (lines drawn as inline
// SVG), totals by key and by model, and the recent-requests log (no prompt text). The admin key reads
// every key's (/usage, /admin/usage/series, /admin/usage/recent); a user key reads its own (/usage/me).
import { api, fmt, h, table } from "./api.js";
import { barChart, lineChart } from "./charts.js";

const NUMERIC = new Set(["requests", "errors", "prompt tokens", "completion tokens", "total tokens", "status",
  "tokens", "latency ms", "TTFT ms"]);
const METRICS = {
  requests: ["requests", "req"], total_tokens: ["tokens", "tok"], errors: ["errors", "err"],
  latency_p50_ms: ["latency p50", "ms"], latency_p95_ms: ["latency p95", "ms"], ttft_p50_ms: ["TTFT p50", "ms"],
  ttft_p95_ms: ["TTFT p95", "ms"],
};
const WINDOWS = { "last hour": [3600, 60], "last 24 hours": [86400, 900], "last 7 days": [604800, 3600] };

async function load(role, windowName) {
  const [span, bucket] = WINDOWS[windowName];
  const since = `since=${encodeURIComponent(new Date(Date.now() - span * 1000).toISOString())}`;
  if (role !== "admin") {
    const mine = await api(`/usage/me?${since}&bucket_s=${bucket}&limit=100`);
    return { summary: mine.summary, series: mine.series, recent: mine.recent, key: mine.key_id };
  }
  const [summary, series, recent] = await Promise.all([api(`/usage?${since}`),
    api(`/admin/usage/series?${since}&bucket_s=${bucket}`), api("/admin/usage/recent?limit=100")]);
  return { summary, series, recent: recent.data };
}

function rollup(title, rows) {
  return [h("h2", {}, title), table(["", "requests", "errors", "prompt tokens", "completion tokens", "total tokens"],
    Object.entries(rows).map(([name, row]) => [name, row.requests, row.errors, row.prompt_tokens,
      row.completion_tokens, row.total_tokens]), NUMERIC)];
}

function overTime(series) {
  const metric = h("select", { id: "usage-metric" }, Object.entries(METRICS).map(([k, [label]]) => h("option", { value: k }, label)));
  const group = h("select", { id: "usage-group" }, h("option", { value: "by_model" }, "by model"),
    h("option", { value: "by_key" }, "by key"));
  const chart = h("div", { id: "usage-series" });
  const draw = () => {
    const lines = Object.fromEntries(Object.entries(series[group.value]).map(([name, rows]) =>
      [name === "-" ? "(none)" : name, rows.map((row) => row[metric.value])]));
    chart.replaceChildren(lineChart("usage-series-chart", series.buckets, lines, METRICS[metric.value][1]));
  };
  metric.addEventListener("change", draw);
  group.addEventListener("change", draw);
  draw();
  return h("div", { class: "card" }, h("h2", {}, `Over time (${series.bucket_s} s buckets)`),
    h("div", { class: "row" }, h("label", {}, "show", metric), h("label", {}, "split", group)), chart);
}

function recentTable(rows) {
  return h("div", { id: "usage-recent" }, table(["time", "key", "model", "endpoint", "status", "tokens", "latency ms",
    "TTFT ms", "error"], rows.map((r) => [r.time.replace("T", " ").slice(0, 19), r.key_id, r.model, r.endpoint, r.status,
    r.total_tokens, fmt(r.latency_ms, 1), fmt(r.ttft_ms, 1), r.error]), NUMERIC));
}

export async function render(element, ctx) {
  const windowSelect = h("select", { id: "usage-window" }, Object.keys(WINDOWS).map((name) => h("option", { value: name }, name)));
  const body = h("div", {});
  const show = async () => {
    try {
      const { summary, series, recent, key } = await load(ctx.role, windowSelect.value);
      body.replaceChildren(h("p", { id: "usage-totals", class: "card" },
        `${key ? `Your key ${key}: ` : ""}${summary.requests} requests, ${summary.errors} errors, ${summary.total_tokens} tokens ` +
        `(${summary.prompt_tokens} prompt + ${summary.completion_tokens} completion), ${windowSelect.value}`),
      h("div", { class: "grid2" }, overTime(series), h("div", { class: "card" }, h("h2", {}, "Requests by model"),
        barChart("usage-model-chart", Object.entries(summary.by_model).map(([m, r]) => [m === "-" ? "(no model)" : m, r.requests]), "req"))),
      ...rollup("By key", summary.by_key), ...rollup("By model", summary.by_model),
      h("h2", {}, "Recent requests"), recentTable(recent));
    } catch (err) {
      body.replaceChildren(h("p", { class: "error" }, err.message));
    }
  };
  windowSelect.addEventListener("change", show);
  element.append(h("h1", {}, ctx.role === "admin" ? "Usage" : "My usage"),
    h("p", { class: "row" }, h("label", {}, "window", windowSelect),
      h("button", { class: "secondary", id: "usage-refresh", onclick: show }, "Refresh")), body);
  await show();
}
