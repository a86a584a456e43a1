"""Benchmark: what the gateway costs, side by side with the alternatives, in one interleaved run.

Rows, all on loopback against the project's Oracle simulator:
  direct   client -> simulator (the floor)
  bare     client -> plain mitmdump, no addon (reverse proxy to the simulator)
  gomodel  client -> mitmdump -s addon/gomodel.py -> simulator
  litellm  client -> LiteLLM proxy -> simulator, when LiteLLM is installed (see --help)

Every workload runs each row in turn, round after round, so the machine's drift hits every row
alike; ratios are taken within a round, then the median over rounds is reported. Output: a
Markdown table on stdout and in docs/bench/results.md, docs/bench/results.json, and a chart,
docs/bench/chart.png. Loopback only, bounded, stops by itself.
"""

import argparse
import asyncio
import itertools
import json
import os
import platform
import random
import secrets
import shutil
import ssl
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from processes import (
    REPO,
    Process,
    Simulator,
    clean_env,
    free_port,
    spawn,
    start_gateway,
    start_simulator,
)

ORACLE_KEY = "sk-bench-oracle"
MODEL = "xai.grok-4"
CHAT_BODY = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "bench"}]})
STREAM_BODY = json.dumps(
    {"model": MODEL, "stream": True, "messages": [{"role": "user", "content": "bench"}]}
)
LITELLM_VENV = REPO / ".venv-litellm"
OUTPUT = REPO / "docs" / "bench"


@dataclass
class Row:
    name: str
    chat_url: str
    models_url: str | None
    headers: dict[str, str]
    process: Process | None  # whose memory is measured (None: nothing between client and sim)


@dataclass
class Results:
    cells: dict[str, dict[str, list[float]]] = field(default_factory=dict)

    def add(self, metric: str, row: str, value: float) -> None:
        self.cells.setdefault(metric, {}).setdefault(row, []).append(value)


# -- load generation (aiohttp, one process, so the client is cheap next to what it measures) ----


async def hammer(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    body: str | None,
    headers: dict[str, str],
    concurrency: int,
    duration: float,
) -> tuple[float, list[float], int]:
    """Closed-loop load: (requests per second, latencies in seconds, errors)."""
    latencies: list[float] = []
    errors = 0
    deadline = time.monotonic() + duration

    async def worker() -> None:
        nonlocal errors
        while time.monotonic() < deadline:
            started = time.monotonic()
            try:
                async with session.request(method, url, data=body, headers=headers) as response:
                    await response.read()
                    if response.status != 200:
                        errors += 1
                        continue
            except aiohttp.ClientError:
                errors += 1
                continue
            latencies.append(time.monotonic() - started)

    started = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return len(latencies) / (time.monotonic() - started), latencies, errors


async def one_stream(
    session: aiohttp.ClientSession, url: str, headers: dict[str, str]
) -> tuple[float, list[float], int]:
    """(time to first chunk, gaps between chunks, bytes) of one streamed chat."""
    started = time.monotonic()
    arrivals: list[float] = []
    size = 0
    async with session.post(url, data=STREAM_BODY, headers=headers) as response:
        async for chunk in response.content.iter_any():
            arrivals.append(time.monotonic())
            size += len(chunk)
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    return arrivals[0] - started, gaps, size


def rss_mib(process: Process | None) -> float:
    """Resident memory of a process and its children (LiteLLM runs workers)."""
    if process is None:
        return 0.0
    pids = [process.popen.pid]
    children = Path(f"/proc/{pids[0]}/task/{pids[0]}/children")
    if children.exists():
        pids += [int(p) for p in children.read_text().split()]
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


async def sample_peak(process: Process | None, work: Awaitable[object]) -> tuple[float, float]:
    """(RSS before, peak RSS during) the work."""
    before = peak = rss_mib(process)
    task = asyncio.ensure_future(work)
    while not task.done():
        peak = max(peak, rss_mib(process))
        await asyncio.sleep(0.05)
    await task
    return before, max(peak, rss_mib(process))


# -- the rows -------------------------------------------------------------------------------------


def start_bare(workdir: Path, simulator: Simulator) -> Row:
    process = spawn(
        [
            str(Path(sys.executable).parent / "mitmdump"),
            "--listen-host",
            "127.0.0.1",
            "-p",
            "0",
            "--mode",
            f"reverse:{simulator.url}",
            "--set",
            f"confdir={workdir / 'bare-conf'}",
            "--set",
            f"ssl_verify_upstream_trusted_ca={simulator.ca}",
            # Stream bodies as they arrive, as a gateway must (mitmproxy buffers them otherwise).
            "--set",
            "stream_large_bodies=1",
        ],
        workdir / "bare.log",
        clean_env(),
    )
    port = int(process.wait_for(r"listening at \S+:(\d+)").group(1))
    return Row(
        "bare",
        f"http://127.0.0.1:{port}/20231130/actions/v1/chat/completions",
        None,
        {"Authorization": f"Bearer {ORACLE_KEY}", "Content-Type": "application/json"},
        process,
    )


def start_litellm(workdir: Path, simulator: Simulator) -> Row | None:
    litellm = LITELLM_VENV / "bin" / "litellm"
    if not litellm.exists():
        print(
            f"litellm row skipped: {litellm} not found. To include it:\n"
            f"  python3.12 -m venv {LITELLM_VENV} && "
            f"{LITELLM_VENV}/bin/pip install 'litellm[proxy]'",
            file=sys.stderr,
        )
        return None
    config = workdir / "litellm.yaml"
    config.write_text(
        "model_list:\n"
        f"  - model_name: {MODEL}\n"
        "    litellm_params:\n"
        f"      model: openai/{MODEL}\n"
        f"      api_base: {simulator.base_url()}\n"
        f"      api_key: {ORACLE_KEY}\n"
        "litellm_settings:\n"
        f"  ssl_verify: {simulator.ca}\n"
        "  telemetry: false\n"
    )
    port, master_key = free_port(), "sk-bench-" + secrets.token_hex(16)
    process = spawn(
        [
            str(litellm),
            "--config",
            str(config),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--num_workers",
            "1",
        ],
        workdir / "litellm.log",
        clean_env(
            LITELLM_LOG="ERROR",
            LITELLM_TELEMETRY="False",
            SSL_CERT_FILE=str(simulator.ca),
            DISABLE_SCHEMA_UPDATE="true",
            LITELLM_MASTER_KEY=master_key,
            # Without this it fetches its model price list from the internet at startup.
            LITELLM_LOCAL_MODEL_COST_MAP="True",
        ),
    )
    if not wait_until_up(f"http://127.0.0.1:{port}/health/liveliness", process, 90):
        print(
            f"litellm row skipped: it did not start; see {workdir / 'litellm.log'}", file=sys.stderr
        )
        return None
    return Row(
        "litellm",
        f"http://127.0.0.1:{port}/v1/chat/completions",
        f"http://127.0.0.1:{port}/v1/models",
        {"Authorization": f"Bearer {master_key}", "Content-Type": "application/json"},
        process,
    )


def wait_until_up(url: str, process: Process, timeout: float) -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.popen.poll() is None:
        try:
            with opener.open(url, timeout=2):
                return True
        except OSError:
            time.sleep(0.5)
    return False


# -- workloads ------------------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix="gomodel-bench-"))
    simulator = start_simulator(workdir / "sim", ORACLE_KEY)
    processes: list[Process] = [simulator.process]
    try:
        gateway = start_gateway(
            workdir / "gw",
            simulator.oracle_env(MODEL),
            ca=simulator.ca,
        )
        processes.append(gateway.process)
        rows = [
            Row(
                "direct",
                simulator.base_url() + "/chat/completions",
                None,
                {"Authorization": f"Bearer {ORACLE_KEY}", "Content-Type": "application/json"},
                None,
            ),
            start_bare(workdir, simulator),
            Row(
                "gomodel",
                f"{gateway.url}/v1/chat/completions",
                f"{gateway.url}/v1/models",
                {"Content-Type": "application/json"},
                gateway.process,
            ),
        ]
        processes.append(rows[1].process)
        if not args.no_litellm and (litellm := start_litellm(workdir, simulator)):
            rows.append(litellm)
            processes.append(litellm.process)
        return await measure(args, rows, simulator)
    finally:
        for process in processes:
            process.stop()
        shutil.rmtree(workdir, ignore_errors=True)


async def measure(args: argparse.Namespace, rows: list[Row], simulator: Simulator) -> dict:
    results = Results()
    ssl_context = ssl.create_default_context(cafile=str(simulator.ca))
    connector = aiohttp.TCPConnector(limit=0, ssl=ssl_context)
    async with aiohttp.ClientSession(
        connector=connector, trust_env=False, timeout=aiohttp.ClientTimeout(total=120)
    ) as session:
        # Warm every row up (connections, caches, first imports).
        for row in rows:
            await hammer(session, "POST", row.chat_url, CHAT_BODY, row.headers, 4, 0.5)

        def shuffled() -> list[Row]:
            return random.sample(rows, len(rows))

        simulator.configure(chunk_delay=0.0)
        for round_number in range(args.rounds):
            print(f"round {round_number + 1}/{args.rounds}: non-streamed chat", file=sys.stderr)
            for concurrency in (1, 10, 50):
                for row in shuffled():
                    rate, latencies, errors = await hammer(
                        session,
                        "POST",
                        row.chat_url,
                        CHAT_BODY,
                        row.headers,
                        concurrency,
                        args.duration,
                    )
                    latencies.sort()
                    results.add(f"chat c={concurrency} req/s", row.name, rate)
                    results.add(
                        f"chat c={concurrency} p50 ms",
                        row.name,
                        latencies[len(latencies) // 2] * 1000,
                    )
                    results.add(
                        f"chat c={concurrency} p99 ms",
                        row.name,
                        latencies[int(len(latencies) * 0.99)] * 1000,
                    )
                    results.add(f"chat c={concurrency} errors", row.name, errors)
            for row in shuffled():  # local /v1/models against a passed-through call
                if row.models_url and row.name == "gomodel":
                    rate, _, _ = await hammer(
                        session, "GET", row.models_url, None, {}, 10, args.duration
                    )
                    results.add("models c=10 req/s", row.name, rate)
                elif row.name == "bare":
                    rate, _, _ = await hammer(
                        session, "POST", row.chat_url, CHAT_BODY, row.headers, 10, args.duration
                    )
                    results.add("models c=10 req/s", "bare (pass-through chat)", rate)

        print("streams: time to first chunk and gaps", file=sys.stderr)
        gap = 0.02
        simulator.configure(chunk_delay=gap)
        for _ in range(args.streams):
            for row in shuffled():
                first, gaps, _ = await one_stream(session, row.chat_url, row.headers)
                results.add("stream first chunk ms", row.name, first * 1000)
                # Held-back chunks arrive together: fewer, uneven gaps than the simulator's.
                results.add("stream chunks seen", row.name, len(gaps) + 1)
                if gaps:
                    results.add("stream gap median ms", row.name, statistics.median(gaps) * 1000)
                    results.add(
                        "stream gap worst ms", row.name, max(abs(g - gap) for g in gaps) * 1000
                    )

        print("memory: 200 concurrent streams", file=sys.stderr)
        simulator.configure(chunk_delay=0.1)
        for row in shuffled():
            if row.process is None:
                continue
            streams = asyncio.gather(
                *(one_stream(session, row.chat_url, row.headers) for _ in range(200))
            )
            before, peak = await sample_peak(row.process, streams)
            results.add("200 streams peak RSS MiB", row.name, peak)

        print("memory: one 50 MB stream", file=sys.stderr)
        simulator.configure(chunk_delay=0.0, stream_bytes=50 * 1024 * 1024)
        for row in shuffled():
            if row.process is None:
                continue
            before, peak = await sample_peak(
                row.process, one_stream(session, row.chat_url, row.headers)
            )
            results.add("50 MB stream RSS growth MiB", row.name, peak - before)
        simulator.configure(stream_bytes=0)
    return summarize(results, [r.name for r in rows], args)


def summarize(results: Results, rows: list[str], args: argparse.Namespace) -> dict:
    table = {
        metric: {row: round(statistics.median(v), 2) for row, v in cells.items()}
        for metric, cells in results.cells.items()
    }
    ratios: dict[str, dict[str, float]] = {}
    for metric, cells in results.cells.items():
        g = cells.get("gomodel")
        if not g:
            continue
        for other in ("bare", "direct", "litellm"):
            if other in cells and len(cells[other]) == len(g) and all(cells[other]):
                per_round = [a / b for a, b in zip(g, cells[other], strict=True)]
                ratios.setdefault(metric, {})[f"gomodel/{other}"] = round(
                    statistics.median(per_round), 3
                )
    return {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "command": "scripts/bench " + " ".join(sys.argv[1:]),
        "rounds": args.rounds,
        "seconds_per_cell": args.duration,
        "rows": rows,
        "table": table,
        "ratios": ratios,
        "targets": check_targets(table, ratios),
    }


def check_targets(table: dict, ratios: dict) -> list[dict]:
    def ratio(metric: str, pair: str) -> float | None:
        return ratios.get(metric, {}).get(pair)

    checks: list[tuple[str, float | None, Callable[[float], bool]]] = []
    for c in (1, 10, 50):
        checks.append(
            (
                f"p50 latency c={c}: gomodel/bare <= 1.15",
                ratio(f"chat c={c} p50 ms", "gomodel/bare"),
                lambda r: r <= 1.15,
            )
        )
        checks.append(
            (
                f"throughput c={c}: gomodel/bare >= 0.85",
                ratio(f"chat c={c} req/s", "gomodel/bare"),
                lambda r: r >= 0.85,
            )
        )
    models = table.get("models c=10 req/s", {})
    if "gomodel" in models and "bare (pass-through chat)" in models:
        checks.append(
            (
                "local /v1/models >= 1.2 x bare pass-through",
                models["gomodel"] / models["bare (pass-through chat)"],
                lambda r: r >= 1.2,
            )
        )
    first = table.get("stream first chunk ms", {})
    if "gomodel" in first and "direct" in first:
        checks.append(
            (
                "first streamed chunk within 5 ms of direct (ms over)",
                first["gomodel"] - first["direct"],
                lambda d: d <= 5,
            )
        )
    growth = table.get("50 MB stream RSS growth MiB", {}).get("gomodel")
    checks.append(("50 MB stream: RSS growth < 10 MiB", growth, lambda g: g < 10))
    checks.append(
        (
            "200 streams: peak RSS <= 1.2 x bare",
            ratio("200 streams peak RSS MiB", "gomodel/bare"),
            lambda r: r <= 1.2,
        )
    )
    for metric in ("chat c=10 req/s", "chat c=50 req/s"):
        if r := ratio(metric, "gomodel/litellm"):
            checks.append((f"{metric}: ahead of LiteLLM", r, lambda x: x > 1))
    return [
        {
            "target": name,
            "value": None if value is None else round(value, 3),
            "met": None if value is None else bool(test(value)),
        }
        for name, value, test in checks
    ]


def markdown(report: dict) -> str:
    rows = report["rows"] + (
        ["bare (pass-through chat)"] if "models c=10 req/s" in report["table"] else []
    )
    lines = [
        "# Benchmark results",
        "",
        f"Machine: {report['machine']}. Command: `{report['command']}`. "
        f"{report['rounds']} interleaved round(s), {report['seconds_per_cell']} s per cell; "
        "medians over rounds, ratios taken within each round.",
        "",
        "| metric | " + " | ".join(rows) + " | gomodel/bare | gomodel/direct | gomodel/litellm |",
        "|---|" + "---|" * (len(rows) + 3),
    ]
    for metric, cells in report["table"].items():
        ratios = report["ratios"].get(metric, {})
        lines.append(
            f"| {metric} | "
            + " | ".join(str(cells.get(row, "")) for row in rows)
            + " | "
            + " | ".join(str(ratios.get(f"gomodel/{o}", "")) for o in ("bare", "direct", "litellm"))
            + " |"
        )
    lines += ["", "| target | value | met |", "|---|---|---|"]
    for check in report["targets"]:
        met = {True: "yes", False: "**no**", None: "n/a"}[check["met"]]
        lines.append(f"| {check['target']} | {check['value']} | {met} |")
    return "\n".join(lines) + "\n"


def chart(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [f"chat c={c} req/s" for c in (1, 10, 50)]
    rows = report["rows"]
    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.8 / len(rows)
    for index, row in enumerate(rows):
        values = [report["table"].get(m, {}).get(row, 0) for m in metrics]
        axes[0].bar([i + index * width for i in range(len(metrics))], values, width, label=row)
        latency = [
            report["table"].get(m.replace("req/s", "p50 ms"), {}).get(row, 0) for m in metrics
        ]
        axes[1].bar([i + index * width for i in range(len(metrics))], latency, width, label=row)
    for axis, title in zip(
        axes,
        ("throughput (req/s, higher is better)", "p50 latency (ms, lower is better)"),
        strict=True,
    ):
        axis.set_xticks([i + 0.4 - width / 2 for i in range(len(metrics))], ["c=1", "c=10", "c=50"])
        axis.set_title(title)
        axis.legend()
    figure.suptitle(f"Non-streamed chat completions on loopback ({report['machine']})")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 round, short cells (< 2 min)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=4.0, help="seconds per cell")
    parser.add_argument("--streams", type=int, default=20, help="streams per row for latency")
    parser.add_argument("--no-litellm", action="store_true")
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.duration, args.streams = 1, 1.0, 5
    if not (1 <= args.rounds <= 10 and 0.5 <= args.duration <= 30 and 1 <= args.streams <= 100):
        parser.error("--rounds 1-10, --duration 0.5-30, --streams 1-100")
    report = asyncio.run(run(args))
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    text = markdown(report)
    (args.output / "results.md").write_text(text)
    chart(report, args.output / "chart.png")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
