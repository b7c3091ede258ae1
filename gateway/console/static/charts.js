// Small charts drawn as inline SVG (no chart library to ship or trust): horizontal bars for totals and
// lines over time for series, each with its own legend. Colours repeat after eight series.
import { h } from "./api.js";

const SVG = "http://www.w3.org/2000/svg";
const COLOURS = ["#2c5ad6", "#17803d", "#c62828", "#b26a00", "#7b1fa2", "#00838f", "#5d4037", "#455a64"];

export function svg(tag, attrs, text) {
  const element = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) element.setAttribute(name, value);
  if (text !== undefined) element.textContent = text;
  return element;
}

const short = (label, length = 32) => (label.length > length ? `${label.slice(0, length - 1)}…` : label);

// Horizontal bars: one per label, width proportional to value.
export function barChart(id, entries, unit) {
  const rowHeight = 22, labelWidth = 200, width = 520;
  const height = Math.max(1, entries.length) * rowHeight + 8;
  const chart = svg("svg", { id, viewBox: `0 0 ${width} ${height}`, width: "100%", role: "img" });
  const max = Math.max(1, ...entries.map(([, v]) => v));
  entries.forEach(([label, value], i) => {
    const y = i * rowHeight + 4, bar = (value / max) * (width - labelWidth - 80);
    chart.append(svg("text", { x: 0, y: y + 14 }, short(label)),
      svg("rect", { x: labelWidth, y, height: rowHeight - 6, width: Math.max(1, bar), fill: COLOURS[0], rx: 2 }),
      svg("text", { x: labelWidth + bar + 6, y: y + 14 }, `${value} ${unit}`));
  });
  return chart;
}

// Lines over time: ``times`` are the bucket starts (ISO), ``lines`` maps a name to one value (or null:
// nothing measured) per bucket. A single-bucket line shows as a dot.
export function lineChart(id, times, lines, unit) {
  const width = 640, height = 180, left = 48, bottom = 20, top = 8;
  const values = Object.values(lines).flat().filter((v) => v !== null);
  const max = Math.max(1e-9, ...values);
  const x = (i) => left + (times.length > 1 ? (i * (width - left - 8)) / (times.length - 1) : (width - left) / 2);
  const y = (v) => top + (1 - v / max) * (height - top - bottom);
  const chart = svg("svg", { id, viewBox: `0 0 ${width} ${height}`, width: "100%", role: "img", "data-lines": Object.keys(lines).length });
  chart.append(svg("line", { x1: left, y1: y(0), x2: width, y2: y(0), stroke: "#d9dee8" }),
    svg("text", { x: 0, y: top + 10 }, `${+max.toPrecision(3)} ${unit}`), svg("text", { x: 0, y: y(0) }, "0"));
  if (times.length) {
    chart.append(svg("text", { x: left, y: height - 4 }, `${times[0].slice(11, 16)} UTC`),
      svg("text", { x: width - 70, y: height - 4 }, `${times[times.length - 1].slice(11, 16)} UTC`));
  }
  Object.entries(lines).forEach(([name, points], n) => {
    const colour = COLOURS[n % COLOURS.length];
    const drawn = points.map((v, i) => (v === null ? null : [x(i), y(v)])).filter(Boolean);
    if (drawn.length > 1) {
      chart.append(svg("polyline", { points: drawn.map((p) => p.join(",")).join(" "), fill: "none", stroke: colour,
        "stroke-width": 2, "data-series": name }));
    }
    drawn.forEach(([cx, cy]) => chart.append(svg("circle", { cx, cy, r: 2.5, fill: colour })));
  });
  const legend = h("p", { class: "legend" }, Object.keys(lines).map((name, n) =>
    h("span", { style: `color: ${COLOURS[n % COLOURS.length]}` }, `■ ${short(name, 40)}  `)));
  return h("div", {}, chart, legend);
}
