// Usage (admin): totals by key and by model from GET /usage, a bar chart drawn as inline SVG, requests
// per minute over the recent log, and the recent-requests table (no prompt text).
import { api, fmt, h, table } from "./api.js";

const SVG = "http://www.w3.org/2000/svg";
const NUMERIC = new Set(["requests", "errors", "prompt tokens", "completion tokens", "total tokens", "status",
  "tokens", "latency ms", "TTFT ms"]);

function svg(tag, attrs, text) {
  const element = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) element.setAttribute(name, value);
  if (text !== undefined) element.textContent = text;
  return element;
}

// Horizontal bars: one per label, width proportional to value.
function barChart(id, entries, unit) {
  const rowHeight = 22, labelWidth = 200, width = 520;
  const height = Math.max(1, entries.length) * rowHeight + 8;
  const chart = svg("svg", { id, viewBox: `0 0 ${width} ${height}`, width: "100%", role: "img" });
  const max = Math.max(1, ...entries.map(([, v]) => v));
  entries.forEach(([label, value], i) => {
    const y = i * rowHeight + 4;
    chart.append(svg("text", { x: 0, y: y + 14 }, label.length > 32 ? `${label.slice(0, 31)}…` : label),
      svg("rect", { x: labelWidth, y, height: rowHeight - 6, width: Math.max(1, (value / max) * (width - labelWidth - 80)),
        fill: "#2c5ad6", rx: 2 }),
      svg("text", { x: labelWidth + (value / max) * (width - labelWidth - 80) + 6, y: y + 14 }, `${value} ${unit}`));
  });
  return chart;
}

// Requests per minute over the recent lines, as columns (oldest left).
function timeChart(rows) {
  const perMinute = new Map();
  for (const row of rows) {
    const minute = row.time.slice(0, 16);
    perMinute.set(minute, (perMinute.get(minute) || 0) + 1);
  }
  const minutes = [...perMinute.keys()].sort().slice(-30);
  const width = 640, height = 120, column = Math.min(48, Math.floor((width - 40) / Math.max(minutes.length, 1)));
  const max = Math.max(1, ...perMinute.values());
  const chart = svg("svg", { id: "usage-time-chart", viewBox: `0 0 ${width} ${height + 20}`, width: "100%", role: "img" });
  minutes.forEach((minute, i) => {
    const value = perMinute.get(minute), bar = (value / max) * (height - 16);
    chart.append(svg("rect", { x: 30 + i * column, y: height - bar, width: Math.max(2, column - 3), height: bar, fill: "#17803d" }),
      svg("text", { x: 30 + i * column, y: height - bar - 3 }, String(value)));
  });
  if (minutes.length) chart.append(svg("text", { x: 30, y: height + 14 }, `${minutes[0].slice(11)} UTC`));
  if (minutes.length > 1) {
    chart.append(svg("text", { x: Math.max(110, 30 + (minutes.length - 1) * column), y: height + 14 },
      `${minutes[minutes.length - 1].slice(11)} UTC`));
  }
  return chart;
}

function rollup(title, rows) {
  return [h("h2", {}, title), table(["", "requests", "errors", "prompt tokens", "completion tokens", "total tokens"],
    Object.entries(rows).map(([name, row]) => [name, row.requests, row.errors, row.prompt_tokens,
      row.completion_tokens, row.total_tokens]), NUMERIC)];
}

export async function render(element) {
  element.append(h("h1", {}, "Usage"));
  try {
    const [summary, recent] = await Promise.all([api("/usage"), api("/admin/usage/recent?limit=100")]);
    element.append(h("p", { id: "usage-totals", class: "card" },
      `${summary.requests} requests, ${summary.errors} errors, ${summary.total_tokens} tokens ` +
      `(${summary.prompt_tokens} prompt + ${summary.completion_tokens} completion) in the usage log`),
    h("div", { class: "grid2" },
      h("div", { class: "card" }, h("h2", {}, "Requests by model"),
        barChart("usage-model-chart", Object.entries(summary.by_model).map(([m, r]) => [m === "-" ? "(no model)" : m, r.requests]), "req")),
      h("div", { class: "card" }, h("h2", {}, "Requests per minute (recent)"), timeChart(recent.data))),
    ...rollup("By key", summary.by_key), ...rollup("By model", summary.by_model),
    h("h2", {}, "Recent requests"),
    h("div", { id: "usage-recent" }, table(["time", "key", "model", "endpoint", "status", "tokens", "latency ms", "TTFT ms", "error"],
      recent.data.map((r) => [r.time.replace("T", " ").slice(0, 19), r.key_id, r.model, r.endpoint, r.status, r.total_tokens, fmt(r.latency_ms, 1),
        fmt(r.ttft_ms, 1), r.error]), NUMERIC)),
    h("p", {}, h("button", { class: "secondary", onclick: () => { element.replaceChildren(); render(element); } }, "Refresh")));
  } catch (err) {
    element.append(h("p", { class: "error" }, err.message));
  }
}
