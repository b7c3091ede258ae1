"""Markdown tables and the PNG plot for ``scripts/bench.py`` results (ratios are same-run figures)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import bench_onnx


def _by_level(rows: list[dict[str, Any]] | None) -> dict[int, dict[str, Any]]:
    return {r["concurrency"]: r for r in rows or []}


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def _ratio(a: Any, b: Any) -> str:
    return f"{a / b:.2f}x" if a and b else "-"


def chat_table(res: dict[str, Any]) -> list[str]:
    ceiling = {int(k): v for k, v in res.get("ceilings", {}).get("static_generate_tokens_per_s", {}).items()}
    one = _by_level(res.get("chat_one_at_a_time"))
    one_any = next(iter(one.values()), {}).get("output_tokens_per_s") if one else None
    if not res.get("chat_gateway"):
        return []
    lines = ["### Chat (streamed, temperature 0, through the gateway)", "",
             "| conc. | out tok/s | req/s | TTFT p50 / p95 / p99 ms | ITL p50 / p95 ms | errors "
             "| static generate() tok/s | vs ceiling | one-at-a-time tok/s | vs one-at-a-time |",
             "|---:|---:|---:|---|---|---:|---:|---:|---:|---:|"]
    for row in res.get("chat_gateway", []):
        c = row["concurrency"]
        base = one.get(c, {}).get("output_tokens_per_s") or one_any
        lines.append(
            f"| {c} | {_fmt(row['output_tokens_per_s'])} | {_fmt(row['requests_per_s'])} "
            f"| {_fmt(row['ttft_p50_ms'])} / {_fmt(row['ttft_p95_ms'])} / {_fmt(row['ttft_p99_ms'])} "
            f"| {_fmt(row['itl_p50_ms'])} / {_fmt(row['itl_p95_ms'])} | {row['errors']} "
            f"| {_fmt(ceiling.get(c))} | {_ratio(row['output_tokens_per_s'], ceiling.get(c))} "
            f"| {_fmt(base)}{'' if c in one else '*'} | {_ratio(row['output_tokens_per_s'], base)} |")
    if one:
        lines += ["", "One-at-a-time server (`WORKER_MAX_BATCH_SIZE=1`), direct: "
                  + ", ".join(f"c={c}: {_fmt(r['output_tokens_per_s'])} tok/s, TTFT p95 {_fmt(r['ttft_p95_ms'])} ms"
                              for c, r in one.items())
                  + ". (* its rate at the nearest measured level: a serial server's rate does not grow.)"]
    return lines


def _lat(row: dict[str, Any]) -> str:
    return " / ".join(_fmt(row.get(f"latency_p{q}_ms")) for q in (50, 95, 99)) if row else "-"


def embedding_table(res: dict[str, Any]) -> list[str]:
    raw = {int(k): v for k, v in res.get("ceilings", {}).get("raw_encode_items_per_s", {}).items()}
    direct, inf = _by_level(res.get("embeddings_direct")), _by_level(res.get("embeddings_infinity"))
    if not res.get("embeddings_gateway"):
        return []
    lines = ["### Embeddings (one sentence per request)", "",
             "| conc. | via gateway items/s | gateway p50 / p95 / p99 ms | errors | direct items/s "
             "| direct p50 / p95 / p99 ms | infinity-emb items/s | infinity p50 / p95 / p99 ms "
             "| gateway vs infinity | raw encode batch 32 | gateway vs raw | load 1m |",
             "|---:|---:|---|---:|---:|---|---:|---|---:|---:|---:|---:|"]
    for row in res.get("embeddings_gateway", []):
        c = row["concurrency"]
        d, i = direct.get(c, {}), inf.get(c, {})
        errors = "/".join(str(r["errors"]) for r in (row, d, i) if r)
        lines.append(
            f"| {c} | {_fmt(row['items_per_s'])} | {_lat(row)} | {errors} | {_fmt(d.get('items_per_s'))} "
            f"| {_lat(d)} | {_fmt(i.get('items_per_s'))} | {_lat(i)} "
            f"| {_ratio(row['items_per_s'], i.get('items_per_s'))} "
            f"| {_fmt(raw.get(32))} | {_ratio(row['items_per_s'], raw.get(32))} | {_fmt(row.get('load_avg_1m'))} |")
    if raw:
        lines += ["", f"Raw sentence-transformers `encode`: batch 1 {_fmt(raw.get(1))}/s, "
                      f"batch 32 {_fmt(raw.get(32))}/s. Errors: gateway/direct/infinity."]
    return lines


def gateway_table(res: dict[str, Any]) -> list[str]:
    direct, via = _by_level(res.get("fake_direct")), _by_level(res.get("fake_gateway"))
    lite = _by_level(res.get("fake_litellm"))
    if not direct:
        return []
    lines = ["### Gateway overhead (fake engine, non-streamed chat)", "",
             "| conc. | direct p50 ms | gateway p50 ms | added p50 ms | LiteLLM p50 ms | LiteLLM added p50 ms "
             "| direct req/s | gateway req/s | LiteLLM req/s | gateway vs LiteLLM req/s | errors | load 1m |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for c, d in direct.items():
        g, ll = via.get(c, {}), lite.get(c, {})
        errors = "/".join(str(r["errors"]) for r in (d, g, ll) if r)
        lines.append(f"| {c} | {_fmt(d['latency_p50_ms'])} | {_fmt(g.get('latency_p50_ms'))} | {_added(g, d)} "
                     f"| {_fmt(ll.get('latency_p50_ms'))} | {_added(ll, d)} "
                     f"| {_fmt(d['requests_per_s'])} | {_fmt(g.get('requests_per_s'))} "
                     f"| {_fmt(ll.get('requests_per_s'))} "
                     f"| {_ratio(g.get('requests_per_s'), ll.get('requests_per_s'))} "
                     f"| {errors} | {_fmt(d.get('load_avg_1m'))} |")
    return [*lines, "", "Errors: direct/gateway/LiteLLM."]


def _added(row: dict[str, Any], direct: dict[str, Any]) -> str:
    if not row or row.get("latency_p50_ms") is None or direct.get("latency_p50_ms") is None:
        return "-"
    return _fmt(round(row["latency_p50_ms"] - direct["latency_p50_ms"], 2))


def markdown(res: dict[str, Any]) -> str:
    m = res.get("machine", {})
    during = m.get("load_avg_during") or {}
    head = [f"Run {res.get('started')} on {m.get('cpus')} CPUs ({m.get('platform')}); took {res.get('duration_s')} s.",
            f"Load average at start {m.get('load_avg_at_start')}"
            + (f"; during the run (1-minute, every {during.get('every_s')} s) min {during.get('min_1m')} / "
               f"median {during.get('median_1m')} / max {during.get('max_1m')}; at the end {during.get('end')}."
               if during else ".")]
    peers = res.get("peers") or {}
    if peers:
        head.append("Peers: " + ", ".join(f"{k} {v or 'not installed'}" for k, v in peers.get("versions", {}).items())
                    + "." + "".join(f" {n}." for n in peers.get("notes", [])))
    parts = [chat_table(res), embedding_table(res), bench_onnx.table(res), gateway_table(res)]
    return "\n".join([*head, ""] + [line for part in parts if part for line in [*part, ""]])


def plot(res: dict[str, Any], path: Path) -> None:
    """One panel per measured view: chat throughput and latency, embeddings throughput and latency,
    gateway request rate (only the parts present in ``res``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [p for p, key in ((_chat_rate, "chat_gateway"), (_chat_latency, "chat_gateway"),
                               (_embed_rate, "embeddings_gateway"), (_embed_latency, "embeddings_gateway"),
                               (_gateway_rate, "fake_direct")) if res.get(key)]
    if not panels:
        return
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4.5), squeeze=False)
    for ax, panel in zip(axes[0], panels, strict=True):
        panel(ax, res)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _levels(ax: Any, title: str, ylabel: str) -> None:
    ax.set_xscale("log", base=2)
    ax.set_xlabel("concurrent clients")
    ax.set_title(title)
    ax.set_ylabel(ylabel)


def _line(ax: Any, rows: list[dict[str, Any]] | None, key: str, style: str, label: str) -> None:
    if rows:
        ax.plot([r["concurrency"] for r in rows], [r[key] for r in rows], style, label=label)


def _chat_rate(ax: Any, res: dict[str, Any]) -> None:
    _line(ax, res.get("chat_gateway"), "output_tokens_per_s", "o-", "continuous batching (gateway)")
    ceiling = res.get("ceilings", {}).get("static_generate_tokens_per_s", {})
    if ceiling:
        ax.plot([int(k) for k in ceiling], list(ceiling.values()), "s--", label="static generate() ceiling")
    _line(ax, res.get("chat_one_at_a_time"), "output_tokens_per_s", "x:", "one request at a time")
    _levels(ax, "chat throughput", "output tokens/s")


def _chat_latency(ax: Any, res: dict[str, Any]) -> None:
    chat = res.get("chat_gateway")
    _line(ax, chat, "ttft_p50_ms", "o-", "TTFT p50")
    _line(ax, chat, "ttft_p95_ms", "o--", "TTFT p95")
    _line(ax, chat, "itl_p50_ms", "^-", "inter-token p50")
    _levels(ax, "chat latency", "ms")


def _embed_rate(ax: Any, res: dict[str, Any]) -> None:
    _line(ax, res.get("embeddings_gateway"), "items_per_s", "o-", "ours, via gateway")
    _line(ax, res.get("embeddings_direct"), "items_per_s", "^--", "ours, direct to worker")
    _line(ax, res.get("embeddings_infinity"), "items_per_s", "s-.", "infinity-emb")
    raw = res.get("ceilings", {}).get("raw_encode_items_per_s", {})
    if raw.get("32") or raw.get(32):
        ax.axhline(raw.get("32") or raw.get(32), color="gray", ls="--", label="raw encode batch 32 (in-process)")
    _levels(ax, "embeddings throughput (1 sentence/request)", "sentences/s")


def _embed_latency(ax: Any, res: dict[str, Any]) -> None:
    _line(ax, res.get("embeddings_gateway"), "latency_p50_ms", "o-", "ours via gateway p50")
    _line(ax, res.get("embeddings_direct"), "latency_p50_ms", "^--", "ours direct p50")
    _line(ax, res.get("embeddings_infinity"), "latency_p50_ms", "s-.", "infinity-emb p50")
    ax.set_yscale("log")
    _levels(ax, "embeddings latency", "ms (log)")


def _gateway_rate(ax: Any, res: dict[str, Any]) -> None:
    series = [(k, label) for k, label in (("fake_direct", "direct to worker"), ("fake_gateway", "our gateway"),
                                          ("fake_litellm", "LiteLLM proxy")) if res.get(k)]
    levels = [r["concurrency"] for r in res["fake_direct"]]
    width = 0.8 / len(series)
    for n, (key, label) in enumerate(series):
        rates = [_by_level(res[key]).get(c, {}).get("requests_per_s") or 0 for c in levels]
        xs = [i + n * width for i in range(len(levels))]
        bars = ax.bar(xs, rates, width, label=label)
        ax.bar_label(bars, fmt="%.0f", fontsize=7)
    ax.set_xticks([i + width * (len(series) - 1) / 2 for i in range(len(levels))], [str(c) for c in levels])
    ax.set_xlabel("concurrent clients")
    ax.set_ylabel("requests/s (fake engine)")
    ax.set_title("gateway overhead: request rate")
