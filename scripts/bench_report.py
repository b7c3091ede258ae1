"""Markdown tables and the PNG plot for ``scripts/bench.py`` results (ratios are same-run figures)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


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


def embedding_table(res: dict[str, Any]) -> list[str]:
    raw = {int(k): v for k, v in res.get("ceilings", {}).get("raw_encode_items_per_s", {}).items()}
    direct = _by_level(res.get("embeddings_direct"))
    if not res.get("embeddings_gateway"):
        return []
    lines = ["### Embeddings (one sentence per request)", "",
             "| conc. | via gateway items/s | latency p50 / p95 / p99 ms | errors | direct items/s "
             "| raw encode batch 32 | gateway vs raw |",
             "|---:|---:|---|---:|---:|---:|---:|"]
    for row in res.get("embeddings_gateway", []):
        c = row["concurrency"]
        lines.append(
            f"| {c} | {_fmt(row['items_per_s'])} | {_fmt(row['latency_p50_ms'])} / {_fmt(row['latency_p95_ms'])} "
            f"/ {_fmt(row['latency_p99_ms'])} | {row['errors']} | {_fmt(direct.get(c, {}).get('items_per_s'))} "
            f"| {_fmt(raw.get(32))} | {_ratio(row['items_per_s'], raw.get(32))} |")
    if raw:
        lines += ["", f"Raw sentence-transformers `encode`: batch 1 {_fmt(raw.get(1))}/s, "
                      f"batch 32 {_fmt(raw.get(32))}/s."]
    return lines


def gateway_table(res: dict[str, Any]) -> list[str]:
    direct, via = _by_level(res.get("fake_direct")), _by_level(res.get("fake_gateway"))
    if not direct:
        return []
    lines = ["### Gateway overhead (fake engine, non-streamed chat)", "",
             "| conc. | direct p50 ms | gateway p50 ms | added p50 ms | direct req/s | gateway req/s |",
             "|---:|---:|---:|---:|---:|---:|"]
    for c, d in direct.items():
        g = via.get(c, {})
        added = (g.get("latency_p50_ms") or 0) - (d.get("latency_p50_ms") or 0) if g else None
        lines.append(f"| {c} | {_fmt(d['latency_p50_ms'])} | {_fmt(g.get('latency_p50_ms'))} | {_fmt(added)} "
                     f"| {_fmt(d['requests_per_s'])} | {_fmt(g.get('requests_per_s'))} |")
    return lines


def markdown(res: dict[str, Any]) -> str:
    m = res.get("machine", {})
    head = [f"Run {res.get('started')} on {m.get('cpus')} CPUs ({m.get('platform')}), load average at start "
            f"{m.get('load_avg_at_start')}; took {res.get('duration_s')} s.", ""]
    parts = [chat_table(res), embedding_table(res), gateway_table(res)]
    return "\n".join(head + [line for part in parts if part for line in [*part, ""]])


def plot(res: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(15, 4.5))
    chat = res.get("chat_gateway", [])
    if chat:
        xs = [r["concurrency"] for r in chat]
        ax1.plot(xs, [r["output_tokens_per_s"] for r in chat], "o-", label="continuous batching (gateway)")
        ceiling = res.get("ceilings", {}).get("static_generate_tokens_per_s", {})
        if ceiling:
            ax1.plot([int(k) for k in ceiling], list(ceiling.values()), "s--", label="static generate() ceiling")
        one = res.get("chat_one_at_a_time", [])
        if one:
            ax1.plot([r["concurrency"] for r in one], [r["output_tokens_per_s"] for r in one], "x:",
                     label="one request at a time")
        ax2.plot(xs, [r["ttft_p50_ms"] for r in chat], "o-", label="TTFT p50")
        ax2.plot(xs, [r["ttft_p95_ms"] for r in chat], "o--", label="TTFT p95")
        ax2.plot(xs, [r["itl_p50_ms"] for r in chat], "^-", label="inter-token p50")
    emb = res.get("embeddings_gateway", [])
    if emb:
        ax3.plot([r["concurrency"] for r in emb], [r["items_per_s"] for r in emb], "o-",
                 label="micro-batched (gateway)")
        direct = res.get("embeddings_direct", [])
        if direct:
            ax3.plot([r["concurrency"] for r in direct], [r["items_per_s"] for r in direct], "^--", label="direct")
        raw = res.get("ceilings", {}).get("raw_encode_items_per_s", {})
        if raw:
            ax3.axhline(raw.get("32") or raw.get(32), color="gray", ls="--", label="raw encode batch 32")
    for ax, title, ylabel in ((ax1, "chat throughput", "output tokens/s"), (ax2, "chat latency", "ms"),
                              (ax3, "embeddings throughput", "sentences/s")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrent clients")
        ax.set_title(title)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
