"""Benchmark: what the gateway costs next to plain mitmdump, counted in the proxy's own CPU time.

Headline: the CPU time the proxy process spends per non-streamed chat call (utime + stime from
/proc/<pid>/stat, read once a run's connections are open and again as it stops, over the calls
completed in between) at 1, 10 and 50 connections, and per streamed chunk, for plain mitmdump
forwarding to the simulator ("bare") and the gateway as it starts with no options ("gomodel":
the SQLite usage ledger on, as a user gets it). CPU time per unit of work
depends far less than throughput and latency on how the machine's cores are shared with the load
client and the simulator, so those two are secondary figures here.

Rows, all on loopback against the project's Oracle simulator (scripts/bench_simulator.py):
  direct   client -> simulator (the floor; no proxy, so no proxy CPU)
  bare     client -> mitmdump --mode reverse:<simulator> --set stream_large_bodies=1, no addon
  gomodel  client -> mitmdump -s addon/gomodel.py -> simulator, no gomodel option: no client
           keys, the SQLite usage ledger at its default ~/.gomodel/usage.db (HOME is the
           benchmark's temporary directory, so the file lands there, never in the repo or the
           user's own ledger)
  gomodel-noledger  the same with --set gomodel_usage_db=off (what the ledger costs)
  keys     the gateway with a client key that has limits (requests and tokens per minute: each
           call is admitted, reserves tokens and settles them), the SQLite usage ledger on
  keys+redis  the same, the limits kept in a real redis-server (one round trip per call)
  litellm  client -> LiteLLM proxy -> simulator, when LiteLLM is installed (see --help)

Load clients: non-streamed calls come from wrk (C, one thread, a Lua script for the POST body and
headers), whose own CPU is reported and is small next to the proxy's. wrk cannot read a stream
chunk by chunk, time its first chunk or hold 1,500 streams open, so streams come from an asyncio
client (aiohttp) in this process; its CPU is reported too.

Workloads:
  chat     wrk at 1, 10 and 50 connections, closed loop, --duration seconds each (the only
           workload of the keys rows, compared with gomodel: what teams cost)
           (held streams, the 50 MB stream: bare and gomodel only)
  stream   20 clients streaming back to back, a token-sized chunk every --chunk-gap seconds:
           chunks/s, CPU per chunk, first chunk
  held     --held streams (1,500) opened over --ramp seconds and held open (a chunk every
           --held-gap seconds): all complete?, first chunk p50/p99, peak RSS, CPU per chunk
           (closing the connections included: a run ends once the proxy has closed them)
  one      --streams streams one at a time, a chunk every 20 ms: first chunk, and whether every
           chunk is passed on as sent (chunks seen, gaps)
  50 MB    one 50 MB stream: the proxy's memory must not grow with it

Inside each round every row runs in turn (shuffled), round after round, so the machine's drift
hits every row alike; each figure is the median over rounds, and a ratio is one of medians (a
burst of other work that hits one row's cell in one round then moves nothing). The CPU that other
processes use during each cell is measured (/proc/stat less this benchmark's processes); a cell
disturbed by more than --disturbed cores of it is run once more (not held streams, not with
--quick), the least disturbed attempt counts, and the report gives the figures.
Output: docs/bench/results.md (also on stdout), results.json and chart.png. Loopback only,
bounded in time, stops by itself.
"""

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import platform
import random
import resource
import secrets
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import aiohttp
from processes import (
    ADDON,
    MITMDUMP,
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
T = TypeVar("T")
BENCH_SIMULATOR = REPO / "scripts" / "bench_simulator.py"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
CONCURRENCY = (1, 10, 50)
STREAM_CLIENTS = 20
# A stream of the simulator is 13 chunks (SSE events) for this prompt; padding adds deltas of
# FILLER_SIZE characters, PADDING_EVENT_BYTES each on the wire.
BASE_CHUNKS, FILLER_SIZE, PADDING_EVENT_BYTES = 13, 4, 212
STREAM_CHUNKS = 200  # per stream in the "stream" workload
SETTLE = 0.2  # seconds for a proxy to finish with the connections a client just closed
WRK_HELP = (
    "wrk, the C load client the benchmark drives non-streamed calls with, is not installed.\n"
    "  Debian/Ubuntu: sudo apt-get install wrk    macOS: brew install wrk\n"
    "  or run `scripts/bench --install-wrk` to have the benchmark run apt-get for you."
)


NO_LEDGER = "gomodel-noledger"


@dataclass
class Row:
    name: str
    chat_url: str
    headers: dict[str, str]
    process: Process | None  # whose CPU and memory are measured (None: no proxy)


@dataclass
class Results:
    cells: dict[str, dict[str, list[float]]] = field(default_factory=dict)

    def add(self, metric: str, row: str, value: float) -> None:
        self.cells.setdefault(metric, {}).setdefault(row, []).append(value)


# -- what a process costs -------------------------------------------------------------------------


def process_tree(pid: int) -> list[int]:
    """The process and its descendants (LiteLLM runs workers; mitmdump is one process)."""
    pids, index = [pid], 0
    while index < len(pids):
        for children in Path(f"/proc/{pids[index]}/task").glob("*/children"):
            with contextlib.suppress(OSError):
                pids += [int(p) for p in children.read_text().split()]
        index += 1
    return pids


def cpu_seconds(process: Process) -> float:
    """User + system CPU time used so far by the process and its descendants."""
    ticks = 0
    for pid in process_tree(process.popen.pid):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime, stime: fields 14 and 15 of stat
    return ticks / CLOCK_TICKS


def rss_mib(process: Process) -> float:
    total = 0
    for pid in process_tree(process.popen.pid):
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def open_files(process: Process) -> int:
    total = 0
    for pid in process_tree(process.popen.pid):
        with contextlib.suppress(OSError):
            total += len(os.listdir(f"/proc/{pid}/fd"))
    return total


async def wind_down(process: Process, files_before: int, limit: float = 30.0) -> None:
    """Wait until the proxy has closed the connections a run opened and stopped using CPU, so
    that closing them counts for that run: the gateway keeps idle upstream connections open for
    aiohttp's keep-alive time (15 s), then closes them. `limit` seconds at most."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        cpu = cpu_seconds(process)
        await asyncio.sleep(0.25)
        idle = cpu_seconds(process) - cpu < 0.01
        if idle and open_files(process) <= files_before + 16:
            return


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def machine_busy() -> float:
    """CPU seconds the whole machine spent busy (user, nice, system, irq, softirq, steal)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


@dataclass
class Meter:
    """How much CPU processes other than the benchmark's use while a cell runs, and reruns."""

    ours: list[Process]
    limit: float  # cores of other work above which a cell is run again
    tries: int = 2
    disturbance: list[float] = field(default_factory=list)  # cores, every attempt
    reruns: int = 0

    def snapshot(self) -> tuple[float, float, float]:
        mine = sum(cpu_seconds(p) for p in self.ours) + own_cpu() + children_cpu()
        return time.monotonic(), machine_busy(), mine

    async def cell(self, work: Callable[[], Awaitable[T]], tries: int | None = None) -> T:
        """The work's result; run again while other processes disturbed it, and then the least
        disturbed attempt's."""
        attempts: list[tuple[float, T]] = []
        for _ in range(tries or self.tries):
            if attempts:
                self.reruns += 1
                print(
                    f"  other work on the machine ({attempts[-1][0]:.2f} cores): again",
                    file=sys.stderr,
                )
            before = self.snapshot()
            result = await work()
            after = self.snapshot()
            other = ((after[1] - before[1]) - (after[2] - before[2])) / (after[0] - before[0])
            other = max(0.0, other)
            attempts.append((other, result))
            if other <= self.limit:
                break
        other, result = min(attempts, key=lambda attempt: attempt[0])
        self.disturbance.append(other)
        return result


def raise_open_files(streams: int) -> int:
    """Raise this process's soft limit on open files to the hard limit; the proxies, the
    simulator and wrk inherit it. The gateway holds about four descriptors per held stream."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    if wanted > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    needed = streams * 4 + 1024
    if wanted < needed:
        sys.exit(
            f"bench: {streams} held streams need about {needed} open files per process; the hard "
            f"limit is {hard}. Raise it (ulimit -Hn, /etc/security/limits.conf) or pass --held "
            f"{max(1, (wanted - 1024) // 4)}."
        )
    return wanted


# -- wrk (non-streamed calls) ---------------------------------------------------------------------


def find_wrk(install: bool) -> str:
    if path := shutil.which("wrk"):
        return path
    if install:
        command = ["apt-get", "install", "-y", "wrk"]
        if os.geteuid() != 0:
            command.insert(0, "sudo")
        print("bench: " + " ".join(command), file=sys.stderr)
        subprocess.run(command, check=False)
        if path := shutil.which("wrk"):
            return path
    sys.exit(WRK_HELP)


def lua_string(text: str) -> str:
    level = 0
    while f"]{'=' * level}]" in text:
        level += 1
    return f"[{'=' * level}[{text}]{'=' * level}]"


WRK_REPORT = """
-- The proxy's CPU time (/proc/<pid>/stat) is read once BENCH_WARM responses have arrived, every
-- connection being open by then, and again as wrk stops, before its connections close: opening
-- and closing connections stays out of the figure (bare mitmdump opens an upstream connection per
-- client connection, the gateway draws on a pool).
proxy_pid = os.getenv("BENCH_PROXY_PID")
warm = tonumber(os.getenv("BENCH_WARM") or "1")
responses, cpu_from = 0, -1
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function proxy_ticks()
  if not proxy_pid then return -1 end
  local file = io.open("/proc/" .. proxy_pid .. "/stat")
  if not file then return -1 end
  local stat = file:read("*a")
  file:close()
  local fields = {}
  for field in stat:match(".*%) (.*)"):gmatch("%S+") do
    fields[#fields + 1] = field
  end
  return tonumber(fields[12]) + tonumber(fields[13]) -- utime + stime, in clock ticks
end

function response(status, headers, body)
  responses = responses + 1
  if responses == warm then
    cpu_from = proxy_ticks()
  end
end

function done(summary, latency, requests)
  local cpu_to, e = proxy_ticks(), summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %.0f, "seconds": %f, "status_errors": %.0f, "socket_errors": %.0f, '
    .. '"p50_us": %.0f, "p99_us": %.0f, "warm": %.0f, "cpu_from": %.0f, "cpu_to": %.0f}\\n',
    summary.requests, summary.duration / 1e6, e.status,
    e.connect + e.read + e.write + e.timeout, latency:percentile(50), latency:percentile(99),
    warm, threads[1]:get("cpu_from"), cpu_to))
end
"""


def wrk_script(path: Path, method: str, body: str | None, headers: dict[str, str]) -> Path:
    lines = [f"wrk.method = {lua_string(method)}"]
    if body is not None:
        lines.append(f"wrk.body = {lua_string(body)}")
    lines += [f"wrk.headers[ {lua_string(k)} ] = {lua_string(v)}" for k, v in headers.items()]
    path.write_text("\n".join(lines) + "\n" + WRK_REPORT)
    return path


@dataclass
class Calls:
    requests: int
    seconds: float
    errors: int
    p50_ms: float
    p99_ms: float
    proxy_cpu_per_call: float | None  # seconds, in the steady state (see WRK_REPORT)
    client_cpu: float  # seconds, wrk's


def run_wrk(
    wrk: str, script: Path, url: str, connections: int, duration: int, process: Process | None
) -> Calls:
    client_before = children_cpu()
    env = clean_env(BENCH_WARM=str(max(20, 3 * connections)))
    if process:
        env["BENCH_PROXY_PID"] = str(process.popen.pid)
    command = [wrk, "-t1", f"-c{connections}", f"-d{duration}s", "--timeout", "10s"]
    done = subprocess.run(
        [*command, "-s", str(script), url],
        capture_output=True,
        text=True,
        timeout=duration + 60,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    client_cpu = children_cpu() - client_before
    time.sleep(SETTLE)  # the proxy closes wrk's connections before the next cell starts
    report = next((x for x in done.stdout.splitlines() if x.startswith("WRK_JSON ")), None)
    if done.returncode or report is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout}\n{done.stderr}")
    figures = json.loads(report.removeprefix("WRK_JSON "))
    steady = figures["requests"] - figures["warm"]
    per_call = None
    if process and figures["cpu_from"] >= 0 and steady > 0:
        per_call = (figures["cpu_to"] - figures["cpu_from"]) / CLOCK_TICKS / steady
    return Calls(
        requests=int(figures["requests"]),
        seconds=figures["seconds"],
        errors=int(figures["status_errors"] + figures["socket_errors"]),
        p50_ms=figures["p50_us"] / 1000,
        p99_ms=figures["p99_us"] / 1000,
        proxy_cpu_per_call=per_call,
        client_cpu=client_cpu,
    )


# -- streams (aiohttp) ----------------------------------------------------------------------------


@dataclass
class Stream:
    sent: float
    first: float | None = None
    end: float | None = None
    chunks: int = 0  # SSE events received
    size: int = 0
    complete: bool = False
    error: str | None = None
    arrivals: list[float] | None = None  # when each read returned, if wanted


async def read_stream(
    session: aiohttp.ClientSession,
    row: Row,
    stream: Stream,
    on_first: Callable[[], None] | None = None,
) -> None:
    tail = b""
    try:
        async with session.post(row.chat_url, data=STREAM_BODY, headers=row.headers) as response:
            async for data in response.content.iter_any():
                if stream.first is None:
                    stream.first = time.monotonic()
                    if on_first:
                        on_first()
                stream.size += len(data)
                if stream.arrivals is not None:
                    stream.arrivals.append(time.monotonic())
                joined = tail + data
                stream.chunks += joined.count(b"data: ")
                tail = joined[-16:]
            stream.complete = response.status == 200 and tail.endswith(b"data: [DONE]\n\n")
            if not stream.complete:
                stream.error = f"status {response.status}, ends {tail!r}"
    except (aiohttp.ClientError, TimeoutError, OSError) as e:
        stream.error = repr(e)
    stream.end = time.monotonic()


async def stream_load(
    session: aiohttp.ClientSession, row: Row, clients: int, duration: float
) -> tuple[list[Stream], float]:
    """`clients` clients streaming back to back for `duration` seconds: (streams, seconds)."""
    streams: list[Stream] = []
    deadline = time.monotonic() + duration

    async def client() -> None:
        while time.monotonic() < deadline:
            stream = Stream(time.monotonic())
            streams.append(stream)
            await read_stream(session, row, stream)
            if stream.error:
                await asyncio.sleep(0.05)

    started = time.monotonic()
    await asyncio.gather(*(client() for _ in range(clients)))
    return streams, time.monotonic() - started


@dataclass
class Held:
    streams: list[Stream]
    peak_open: int
    rss_before: float
    rss_peak: float
    proxy_cpu: float
    client_cpu: float


async def hold_streams(
    ssl_context: ssl.SSLContext, row: Row, count: int, ramp: float, timeout: float
) -> Held:
    """`count` streams opened evenly over `ramp` seconds, each read to its end."""
    assert row.process is not None
    streams: list[Stream] = []
    open_now = peak_open = 0

    def opened() -> None:
        nonlocal open_now, peak_open
        open_now += 1
        peak_open = max(peak_open, open_now)

    async def one(session: aiohttp.ClientSession, stream: Stream) -> None:
        nonlocal open_now
        await read_stream(session, row, stream, opened)
        if stream.first is not None:
            open_now -= 1

    rss_before = rss_peak = rss_mib(row.process)
    files_before = open_files(row.process)
    cpu_before, client_before = cpu_seconds(row.process), own_cpu()
    connector = aiohttp.TCPConnector(limit=0, ssl=ssl_context)
    async with aiohttp.ClientSession(
        connector=connector, trust_env=False, timeout=aiohttp.ClientTimeout(total=timeout)
    ) as session:
        tasks = []
        started = time.monotonic()
        next_sample = started
        for index in range(count):
            if (wait := started + index * ramp / count - time.monotonic()) > 0:
                await asyncio.sleep(wait)
            if time.monotonic() >= next_sample:
                rss_peak, next_sample = max(rss_peak, rss_mib(row.process)), next_sample + 0.1
            stream = Stream(time.monotonic())
            streams.append(stream)
            tasks.append(asyncio.create_task(one(session, stream)))
        everything = asyncio.gather(*tasks)
        while not everything.done():
            rss_peak = max(rss_peak, rss_mib(row.process))
            await asyncio.wait([everything], timeout=0.1)
        await everything
    client_cpu = own_cpu() - client_before
    await wind_down(row.process, files_before)
    return Held(
        streams,
        peak_open,
        rss_before,
        max(rss_peak, rss_mib(row.process)),
        cpu_seconds(row.process) - cpu_before,
        client_cpu,
    )


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))] if ordered else 0.0


# -- the rows -------------------------------------------------------------------------------------


def start_bench_simulator(workdir: Path) -> Simulator:
    return start_simulator(workdir, ORACLE_KEY, script=BENCH_SIMULATOR)


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
    simulator = start_bench_simulator(workdir / "sim")
    processes: list[Process] = [simulator.process]
    try:
        gateway = start_default_gateway(workdir / "gw", simulator)
        processes.append(gateway.process)
        off = ("--set", "gomodel_usage_db=off")
        no_ledger = start_gateway(
            workdir / "noledger", simulator.oracle_env(MODEL), *off, ca=simulator.ca
        )
        processes.append(no_ledger.process)
        bare = start_bare(workdir, simulator)
        processes.append(bare.process)
        rows = [
            Row(
                "direct",
                simulator.base_url() + "/chat/completions",
                {"Authorization": f"Bearer {ORACLE_KEY}", "Content-Type": "application/json"},
                None,
            ),
            bare,
            gateway,
            Row(
                NO_LEDGER,
                f"{no_ledger.url}/v1/chat/completions",
                {"Content-Type": "application/json"},
                no_ledger.process,
            ),
        ]
        if not args.no_litellm and (litellm := start_litellm(workdir, simulator)):
            rows.append(litellm)
            processes.append(litellm.process)
        team_rows = []
        redis = start_redis(workdir / "redis")
        if redis:
            processes.append(redis[0])
        for name, redis_url in (("keys", None), ("keys+redis", redis[1] if redis else None)):
            if name == "keys+redis" and not redis_url:
                print("bench: no redis-server (scripts/install-stores): no keys+redis row")
                continue
            row = start_team_gateway(workdir / name, simulator, name, redis_url)
            assert row.process is not None
            processes.append(row.process)
            team_rows.append(row)
        return await measure(args, rows, simulator, workdir, team_rows)
    finally:
        for process in processes:
            process.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def start_default_gateway(workdir: Path, simulator: Simulator) -> Row:
    """The gateway as it starts with no gomodel option: the SQLite usage ledger on, at its
    default ~/.gomodel/usage.db, with HOME this row's directory (processes.start_gateway would
    set gomodel_usage_db). Only mitmproxy's own options: the port, its confdir, and trust in the
    simulator's certificate."""
    workdir.mkdir(parents=True)
    args = [str(MITMDUMP), "--listen-host", "127.0.0.1", "-p", "0", "-s", str(ADDON)]
    args += ["--set", f"confdir={workdir / 'mitmproxy'}"]
    args += ["--set", f"ssl_verify_upstream_trusted_ca={simulator.ca}"]
    env = clean_env(**simulator.oracle_env(MODEL), HOME=str(workdir))
    process = spawn(args, workdir / "mitmdump.log", env)
    port = int(process.wait_for(r"proxy(?: \(\S+ mode\))? listening at \S+:(\d+)").group(1))
    ledger, deadline = workdir / ".gomodel" / "usage.db", time.monotonic() + 10
    while not ledger.is_file():  # opened as the proxy starts running
        if time.monotonic() > deadline:
            process.stop()
            raise RuntimeError(f"the default gateway made no {ledger}; see {process.output}")
        time.sleep(0.05)
    headers = {"Content-Type": "application/json"}
    return Row("gomodel", f"http://127.0.0.1:{port}/v1/chat/completions", headers, process)


TEAM_KEY = "gm-bench-team-key"
TEAM_ROWS = ("keys", "keys+redis")
TEAM_CONFIG = """
server:
  keys:
    bench:
      key: %s
      requests_per_minute: 1000000000
      tokens_per_minute: 1000000000000
"""


def start_team_gateway(
    workdir: Path, simulator: Simulator, name: str, redis_url: str | None
) -> Row:
    """The gateway as a team runs it: a client key with limits, the SQLite ledger, maybe Redis."""
    workdir.mkdir(parents=True)
    config = workdir / "gomodel.yaml"
    config.write_text(TEAM_CONFIG % TEAM_KEY)
    options = ["--set", f"gomodel_config={config}"]
    if redis_url:
        options += ["--set", f"gomodel_redis_url={redis_url}"]
    gateway = start_gateway(workdir, simulator.oracle_env(MODEL), *options, ca=simulator.ca)
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {TEAM_KEY}"}
    return Row(name, f"{gateway.url}/v1/chat/completions", headers, gateway.process)


def start_redis(workdir: Path) -> tuple[Process, str] | None:
    """Debian's redis-server on a free loopback port, if installed."""
    binary = shutil.which("redis-server")
    if binary is None:
        return None
    workdir.mkdir(parents=True)
    port = free_port()
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly"]
    process = spawn([*args, "no", "--dir", str(workdir)], workdir / "redis.log", clean_env())
    process.wait_for(r"Ready to accept connections")
    return process, f"redis://127.0.0.1:{port}/0"


def padding(chunks: int) -> int:
    """stream_bytes for streams of about `chunks` chunks."""
    return max(0, chunks - BASE_CHUNKS) * PADDING_EVENT_BYTES


async def measure(
    args: argparse.Namespace,
    rows: list[Row],
    simulator: Simulator,
    workdir: Path,
    team_rows: list[Row],
) -> dict:
    """`team_rows` run the non-streamed workload only."""
    results = Results()
    chat_rows = rows + team_rows
    meter = Meter([simulator.process, *(r.process for r in chat_rows if r.process)], args.disturbed)
    if args.quick:
        meter.tries = 1  # a smoke test: measured and reported, never run again
    ssl_context = ssl.create_default_context(cafile=str(simulator.ca))
    scripts = {
        row.name: wrk_script(workdir / f"{row.name}.lua", "POST", CHAT_BODY, row.headers)
        for row in chat_rows
    }
    held_rows = [row for row in rows if row.name in ("bare", "gomodel")]  # a minute each

    def shuffled(some: list[Row]) -> list[Row]:
        return random.sample(some, len(some))

    connector = aiohttp.TCPConnector(limit=0, ssl=ssl_context)
    async with aiohttp.ClientSession(
        connector=connector, trust_env=False, timeout=aiohttp.ClientTimeout(total=120)
    ) as session:
        # Warm every row up: connections, caches, first imports.
        for row in chat_rows:
            run_wrk(args.wrk, scripts[row.name], row.chat_url, 4, 1, row.process)
        for row in rows:
            await read_stream(session, row, Stream(time.monotonic()))

        for number in range(args.rounds):
            simulator.reset()  # forget the requests recorded so far (the simulator keeps them)
            print(f"round {number + 1}/{args.rounds}: non-streamed chat (wrk)", file=sys.stderr)
            simulator.configure(chunk_delay=0.0, stream_bytes=0)
            for connections in CONCURRENCY:
                results.cells.setdefault(f"chat c={connections} proxy CPU per call ms", {})
                for row in shuffled(chat_rows):

                    async def chat(row: Row = row, connections: int = connections) -> Calls:
                        return run_wrk(
                            args.wrk,
                            scripts[row.name],
                            row.chat_url,
                            connections,
                            args.duration,
                            row.process,
                        )

                    calls = await meter.cell(chat)
                    name = f"chat c={connections}"
                    done = max(calls.requests, 1)
                    if calls.proxy_cpu_per_call is not None:
                        results.add(
                            f"{name} proxy CPU per call ms",
                            row.name,
                            calls.proxy_cpu_per_call * 1000,
                        )
                    results.add(f"{name} req/s", row.name, calls.requests / calls.seconds)
                    results.add(f"{name} p50 ms", row.name, calls.p50_ms)
                    results.add(f"{name} p99 ms", row.name, calls.p99_ms)
                    results.add(f"{name} errors", row.name, calls.errors)
                    results.add(
                        f"{name} wrk CPU per call ms", row.name, calls.client_cpu / done * 1000
                    )

            print(
                f"round {number + 1}/{args.rounds}: {STREAM_CLIENTS} streaming clients",
                file=sys.stderr,
            )
            simulator.configure(
                chunk_delay=args.chunk_gap,
                stream_bytes=padding(STREAM_CHUNKS),
                filler_size=FILLER_SIZE,
            )
            results.cells.setdefault(f"stream x{STREAM_CLIENTS} proxy CPU per chunk µs", {})
            for row in shuffled(rows):

                async def streaming(row: Row = row) -> tuple[list[Stream], float, float, float]:
                    before = cpu_seconds(row.process) if row.process else 0.0
                    client_before = own_cpu()
                    streams, seconds = await stream_load(
                        session, row, STREAM_CLIENTS, args.duration
                    )
                    client_cpu = own_cpu() - client_before
                    await asyncio.sleep(SETTLE)
                    cpu = cpu_seconds(row.process) - before if row.process else 0.0
                    return streams, seconds, cpu, client_cpu

                streams, seconds, cpu, client_cpu = await meter.cell(streaming)
                chunks = max(1, sum(s.chunks for s in streams))
                name = f"stream x{STREAM_CLIENTS}"
                if row.process:
                    results.add(f"{name} proxy CPU per chunk µs", row.name, cpu / chunks * 1e6)
                results.add(f"{name} chunks/s", row.name, chunks / seconds)
                results.add(f"{name} chunks per stream", row.name, chunks / max(1, len(streams)))
                results.add(
                    f"{name} first chunk p50 ms",
                    row.name,
                    percentile([s.first - s.sent for s in streams if s.first], 0.5) * 1000,
                )
                results.add(f"{name} errors", row.name, sum(1 for s in streams if not s.complete))
                results.add(f"{name} client CPU per chunk µs", row.name, client_cpu / chunks * 1e6)

            if number < args.held_rounds:
                await held_round(args, results, held_rows, simulator, ssl_context, number, meter)

        print("streams one at a time: first chunk and gaps", file=sys.stderr)
        gap = 0.02
        simulator.configure(chunk_delay=gap, stream_bytes=0)
        for _ in range(args.streams):
            for row in shuffled(rows):
                stream = Stream(time.monotonic(), arrivals=[])
                await read_stream(session, row, stream)
                arrivals = stream.arrivals or [stream.sent]
                gaps = [b - a for a, b in itertools.pairwise(arrivals)]
                results.add("stream first chunk ms", row.name, (arrivals[0] - stream.sent) * 1000)
                # Chunks held back arrive together: fewer reads, uneven gaps.
                results.add("stream chunks seen", row.name, len(arrivals))
                if gaps:
                    results.add("stream gap median ms", row.name, statistics.median(gaps) * 1000)
                    results.add(
                        "stream gap worst ms", row.name, max(abs(g - gap) for g in gaps) * 1000
                    )

        print("memory: one 50 MB stream", file=sys.stderr)
        simulator.configure(chunk_delay=0.0, stream_bytes=50 * 1024 * 1024, filler_size=16384)
        for row in shuffled(held_rows):
            assert row.process is not None
            before = rss_mib(row.process)
            stream = Stream(time.monotonic())
            task = asyncio.ensure_future(read_stream(session, row, stream))
            peak = before
            while not task.done():
                peak = max(peak, rss_mib(row.process))
                await asyncio.sleep(0.05)
            await task
            results.add(
                "50 MB stream RSS growth MiB", row.name, max(peak, rss_mib(row.process)) - before
            )
        simulator.reset()
    return summarize(results, [r.name for r in chat_rows], args, meter)


async def held_round(
    args: argparse.Namespace,
    results: Results,
    rows: list[Row],
    simulator: Simulator,
    ssl_context: ssl.SSLContext,
    number: int,
    meter: Meter,
) -> None:
    print(
        f"round {number + 1}/{args.rounds}: {args.held} streams held open at once",
        file=sys.stderr,
    )
    simulator.configure(
        chunk_delay=args.held_gap,
        stream_bytes=padding(args.held_chunks),
        filler_size=FILLER_SIZE,
    )
    life = args.held_chunks * args.held_gap
    name = f"held {args.held}"
    for row in random.sample(rows, len(rows)):
        held = await meter.cell(
            lambda row=row: hold_streams(
                ssl_context, row, args.held, args.ramp, args.ramp + life + 60
            ),
            tries=1,  # a minute each: measured and reported, not run again
        )
        streams = held.streams
        chunks = max(1, sum(s.chunks for s in streams))
        firsts = [s.first - s.sent for s in streams if s.first]
        results.add(f"{name} completed", row.name, sum(1 for s in streams if s.complete))
        results.add(f"{name} peak open at once", row.name, held.peak_open)
        results.add(f"{name} first chunk p50 ms", row.name, percentile(firsts, 0.5) * 1000)
        results.add(f"{name} first chunk p99 ms", row.name, percentile(firsts, 0.99) * 1000)
        results.add(f"{name} peak RSS MiB", row.name, held.rss_peak)
        results.add(f"{name} proxy CPU per chunk µs", row.name, held.proxy_cpu / chunks * 1e6)
        results.add(f"{name} client CPU per chunk µs", row.name, held.client_cpu / chunks * 1e6)
        if errors := [s.error for s in streams if s.error]:
            print(f"  {row.name}: {len(errors)} streams failed, e.g. {errors[0]}", file=sys.stderr)


# -- report ---------------------------------------------------------------------------------------


def summarize(results: Results, rows: list[str], args: argparse.Namespace, meter: Meter) -> dict:
    table = {
        metric: {row: round(statistics.median(v), 3) for row, v in cells.items()}
        for metric, cells in results.cells.items()
    }
    ratios: dict[str, dict[str, float]] = {}
    for metric, cells in results.cells.items():
        g = cells.get("gomodel")
        if not g:
            continue
        for other in ("bare", "direct", "litellm", NO_LEDGER):
            if other in cells and statistics.median(cells[other]):
                ratios.setdefault(metric, {})[f"gomodel/{other}"] = round(
                    statistics.median(g) / statistics.median(cells[other]), 3
                )
        if NO_LEDGER in cells and cells.get("bare") and statistics.median(cells["bare"]):
            ratios.setdefault(metric, {})[f"{NO_LEDGER}/bare"] = round(
                statistics.median(cells[NO_LEDGER]) / statistics.median(cells["bare"]), 3
            )
        for team in TEAM_ROWS:
            if team in cells and statistics.median(g):
                ratios.setdefault(metric, {})[f"{team}/gomodel"] = round(
                    statistics.median(cells[team]) / statistics.median(g), 3
                )
    spread = {}  # lowest and highest gomodel/bare ratio of a single round
    for metric, cells in results.cells.items():
        g, b = cells.get("gomodel"), cells.get("bare")
        if g and b and len(g) == len(b) and all(b):
            per_round = [x / y for x, y in zip(g, b, strict=True)]
            spread[metric] = [round(min(per_round), 3), round(max(per_round), 3)]
    wrk_version = subprocess.run([args.wrk, "-v"], capture_output=True, text=True).stdout
    return {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}",
        "command": " ".join(["scripts/bench", *sys.argv[1:]]).strip(),
        "load_client": {
            "non-streamed": (wrk_version.splitlines() or ["wrk"])[0].split(" Copyright")[0],
            "streams": f"aiohttp {aiohttp.__version__} (asyncio, in the benchmark's process)",
        },
        "rounds": args.rounds,
        "held_rounds": min(args.held_rounds, args.rounds),
        "seconds_per_cell": args.duration,
        "stream_chunk_gap_s": args.chunk_gap,
        "held": {
            "streams": args.held,
            "ramp_s": args.ramp,
            "chunk_gap_s": args.held_gap,
            "chunks_per_stream": args.held_chunks,
        },
        "rows": rows,
        "other_work_cores": {
            "limit": args.disturbed,
            "median": round(statistics.median(meter.disturbance), 3),
            "max": round(max(meter.disturbance), 3),
            "cells": len(meter.disturbance),
            "reruns": meter.reruns,
        },
        "raw": results.cells,
        "ratio_spread": spread,
        "table": table,
        "ratios": ratios,
        "targets": check_targets(results, table, ratios, args),
    }


def check_targets(
    results: Results, table: dict, ratios: dict, args: argparse.Namespace
) -> list[dict]:
    def ratio(metric: str) -> float | None:
        return ratios.get(metric, {}).get("gomodel/bare")

    checks: list[tuple[str, float | None, Callable[[float], bool]]] = []
    for c in CONCURRENCY:
        checks.append(
            (
                f"CPU per non-streamed call, {c} connection(s), ledger on: gomodel/bare <= 1.1",
                ratio(f"chat c={c} proxy CPU per call ms"),
                lambda r: r <= 1.1,
            )
        )
    checks.append(
        (
            f"CPU per streamed chunk, {STREAM_CLIENTS} clients, ledger on: gomodel/bare <= 1.3",
            ratio(f"stream x{STREAM_CLIENTS} proxy CPU per chunk µs"),
            lambda r: r <= 1.3,
        )
    )
    held = f"held {args.held}"
    checks.append(
        (
            f"CPU per streamed chunk, {args.held} held streams, ledger on: gomodel/bare <= 1.3",
            ratio(f"{held} proxy CPU per chunk µs"),
            lambda r: r <= 1.3,
        )
    )
    completed = results.cells.get(f"{held} completed", {}).get("gomodel")
    checks.append(
        (
            f"{args.held} held streams all complete, ledger on (fewest completed in a round)",
            min(completed) if completed else None,
            lambda n: n == args.held,
        )
    )
    growth = table.get("50 MB stream RSS growth MiB", {}).get("gomodel")
    checks.append(("50 MB stream: RSS growth < 10 MiB", growth, lambda g: g < 10))
    # Issue 13: the ledger and limits cost at most 10% of the throughput at 10 clients (the
    # Redis round trip is reported in its own row, beside it).
    throughput = ratios.get("chat c=10 req/s", {}).get("keys/gomodel")
    checks.append(
        (
            "non-streamed calls, 10 connections: keys/gomodel throughput >= 0.9",
            throughput,
            lambda r: r >= 0.9,
        )
    )
    return [
        {
            "target": name,
            "value": None if value is None else round(value, 3),
            "met": None if value is None else bool(test(value)),
        }
        for name, value, test in checks
    ]


def fmt(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"


def load_note(report: dict) -> str:
    other = report["other_work_cores"]
    note = (
        f" Other processes on the machine used a median {other['median']} cores (max "
        f"{other['max']}) during the cells kept; {other['reruns']} of {other['cells']} cells were "
        f"run again for more than {other['limit']}."
    )
    if load := report.get("load_average"):
        note += (
            f" Load average (1 min): {load['before'][0]:.1f} before, {load['after'][0]:.1f} after."
        )
    return note


def markdown(report: dict) -> str:
    table, ratios, held = report["table"], report["ratios"], report["held"]
    rows = report["rows"]
    pair = "gomodel/bare"
    lines = [
        "# Benchmark results",
        "",
        f"Machine: {report['machine']}. Command: `{report['command']}`. "
        f"{report['rounds']} interleaved round(s) ({report['held_rounds']} with held streams), "
        f"{report['seconds_per_cell']} s per cell; medians over rounds, ratios of the medians. "
        f"Load: {report['load_client']['non-streamed']} for non-streamed calls, "
        f"{report['load_client']['streams']} for streams.{load_note(report)}",
        "",
        "## Headline: the proxy's own CPU time per unit of work, as the gateway starts",
        "",
        "utime + stime of the proxy process (/proc/<pid>/stat) over a run, divided by the calls "
        "completed or the chunks delivered. gomodel is the gateway started with no option (the "
        "SQLite usage ledger on); gomodel-noledger the same with gomodel_usage_db=off. "
        "gomodel/bare is the ratio of the medians; round by round gives the lowest and highest "
        "ratio within a single round, a measure of the noise.",
        "",
        f"| work | bare mitmdump | gomodel | gomodel/bare | round by round | target | {NO_LEDGER} "
        f"| {NO_LEDGER}/bare |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def headline(label: str, metric: str, target: str) -> None:
        cells, ratio = table.get(metric, {}), ratios.get(metric, {})
        spread = report["ratio_spread"].get(metric)
        lines.append(
            f"| {label} | {fmt(cells.get('bare'))} | {fmt(cells.get('gomodel'))} | "
            f"{fmt(ratio.get(pair))} | "
            f"{f'{fmt(spread[0])} to {fmt(spread[1])}' if spread else ''} | {target} | "
            f"{fmt(cells.get(NO_LEDGER))} | {fmt(ratio.get(f'{NO_LEDGER}/bare'))} |"
        )

    for c in CONCURRENCY:
        headline(
            f"non-streamed call, {c} connection{'s' if c > 1 else ''} (CPU ms per call)",
            f"chat c={c} proxy CPU per call ms",
            "<= 1.1",
        )
    headline(
        f"streamed chunk, {STREAM_CLIENTS} clients (CPU µs per chunk)",
        f"stream x{STREAM_CLIENTS} proxy CPU per chunk µs",
        "<= 1.3",
    )
    h = f"held {held['streams']}"
    headline(
        f"streamed chunk, {held['streams']} held streams (CPU µs per chunk)",
        f"{h} proxy CPU per chunk µs",
        "<= 1.3",
    )
    headline(f"{held['streams']} held streams: completed", f"{h} completed", "all")
    headline(f"{held['streams']} held streams: peak open at once", f"{h} peak open at once", "")
    headline(f"{held['streams']} held streams: first chunk p50 (ms)", f"{h} first chunk p50 ms", "")
    headline(f"{held['streams']} held streams: first chunk p99 (ms)", f"{h} first chunk p99 ms", "")
    headline(f"{held['streams']} held streams: peak RSS (MiB)", f"{h} peak RSS MiB", "")
    lines += [
        "",
        f"Streams: {STREAM_CLIENTS} clients stream back to back, a token-sized chunk every "
        f"{report['stream_chunk_gap_s']} s (about {STREAM_CHUNKS} per stream). Held: "
        f"{held['streams']} streams opened evenly over {held['ramp_s']} s, a chunk every "
        f"{held['chunk_gap_s']} s (about {held['chunks_per_stream']} per stream), so all are "
        "open at once.",
        "",
        *team_section(report),
        "## Targets",
        "",
        "| target | value | met |",
        "|---|---|---|",
    ]
    for check in report["targets"]:
        met = {True: "yes", False: "**no**", None: "n/a"}[check["met"]]
        lines.append(f"| {check['target']} | {check['value']} | {met} |")
    others = [o for o in ("bare", "direct", "litellm", NO_LEDGER) if o in rows]
    lines += [
        "",
        "## All figures",
        "",
        "| metric | "
        + " | ".join(rows)
        + " | "
        + " | ".join(f"gomodel/{o}" for o in others)
        + " |",
        "|---|" + "---|" * (len(rows) + len(others)),
    ]
    for metric, cells in table.items():
        lines.append(
            f"| {metric} | "
            + " | ".join(fmt(cells.get(row)) for row in rows)
            + " | "
            + " | ".join(fmt(ratios.get(metric, {}).get(f"gomodel/{o}")) for o in others)
            + " |"
        )
    return "\n".join(lines) + "\n"


def team_section(report: dict) -> list[str]:
    """What client keys, limits and the ledger cost, next to the same gateway without them."""
    table, ratios = report["table"], report["ratios"]
    teams = [team for team in TEAM_ROWS if team in report["rows"]]
    if not teams:
        return []
    lines = [
        "## Teams: client keys, limits, the ledger, Redis",
        "",
        "Non-streamed calls through a gateway with a client key that has limits (each call is "
        "admitted, reserves tokens and settles them) and the SQLite usage ledger (keys), and "
        "the same with the limits in Redis (keys+redis), next to the gateway as it starts (no "
        "keys, the ledger on).",
        "",
        "| work | gomodel | "
        + " | ".join(teams)
        + " | "
        + " | ".join(f"{t}/gomodel" for t in teams)
        + " |",
        "|---|---|" + "---|" * (2 * len(teams)),
    ]
    for c in CONCURRENCY:
        for label, metric in (
            (f"CPU ms per call, {c} connection(s)", f"chat c={c} proxy CPU per call ms"),
            (f"calls/s, {c} connection(s)", f"chat c={c} req/s"),
            (f"p50 ms, {c} connection(s)", f"chat c={c} p50 ms"),
        ):
            cells = table.get(metric, {})
            lines.append(
                f"| {label} | {fmt(cells.get('gomodel'))} | "
                + " | ".join(fmt(cells.get(t)) for t in teams)
                + " | "
                + " | ".join(fmt(ratios.get(metric, {}).get(f"{t}/gomodel")) for t in teams)
                + " |"
            )
    return [*lines, ""]


def chart(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"c={c}" for c in CONCURRENCY]
    panels = [
        (
            "proxy CPU per call (ms, lower is better)",
            [f"chat c={c} proxy CPU per call ms" for c in CONCURRENCY],
            [r for r in report["rows"] if r != "direct"],
        ),
        (
            "throughput (calls/s, wrk)",
            [f"chat c={c} req/s" for c in CONCURRENCY],
            [r for r in report["rows"] if r != "direct"],
        ),
    ]
    figure, axes = plt.subplots(1, 2, figsize=(11, 4))
    for axis, (title, metrics, rows) in zip(axes, panels, strict=True):
        width = 0.8 / len(rows)
        for index, row in enumerate(rows):
            values = [report["table"].get(m, {}).get(row, 0) for m in metrics]
            axis.bar([i + index * width for i in range(len(metrics))], values, width, label=row)
        axis.set_xticks([i + 0.4 - width / 2 for i in range(len(metrics))], labels)
        axis.set_title(title)
        axis.set_ylim(0, axis.get_ylim()[1] * 1.2)
        axis.legend(loc="upper center", ncol=len(rows))
    figure.suptitle(f"Non-streamed chat completions on loopback ({report['machine']})")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="1 round, short cells (< 2 min)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--duration", type=int, default=2, help="seconds per cell (whole)")
    parser.add_argument("--held", type=int, default=1500, help="streams held open at once")
    parser.add_argument("--held-rounds", type=int, default=3, help="rounds with held streams")
    parser.add_argument("--ramp", type=float, default=20.0, help="seconds to open held streams")
    parser.add_argument("--held-gap", type=float, default=1.0, help="held streams' chunk gap (s)")
    parser.add_argument("--held-chunks", type=int, default=35, help="chunks per held stream")
    parser.add_argument("--chunk-gap", type=float, default=0.005, help="streams' chunk gap (s)")
    parser.add_argument(
        "--disturbed",
        type=float,
        default=0.25,
        help="cores of CPU used by other processes above which a cell is run again",
    )
    parser.add_argument(
        "--streams", type=int, default=20, help="streams one at a time per row (first chunk, gaps)"
    )
    parser.add_argument("--no-litellm", action="store_true")
    parser.add_argument(
        "--install-wrk", action="store_true", help="run apt-get install wrk when wrk is missing"
    )
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.duration, args.held_rounds, args.streams = 1, 1, 1, 3
        args.ramp, args.held_gap, args.held_chunks = 8.0, 0.8, 13
    if not (
        1 <= args.rounds <= 10
        and 1 <= args.duration <= 30
        and 1 <= args.held <= 5000
        and 1 <= args.streams <= 100
        and 1 <= args.ramp <= 60
        and 0.01 <= args.held_gap <= 2
        and BASE_CHUNKS <= args.held_chunks <= 200
        and 0 <= args.chunk_gap <= 0.1
    ):
        parser.error(
            "--rounds 1-10, --duration 1-30, --held 1-5000, --streams 1-100, --ramp 1-60, "
            "--held-gap 0.01-2, --held-chunks 13-200, --chunk-gap 0-0.1"
        )
    args.held_rounds = max(0, min(args.held_rounds, args.rounds))
    args.wrk = find_wrk(args.install_wrk)
    raise_open_files(args.held)
    load_before = os.getloadavg()
    report = asyncio.run(run(args))
    report["load_average"] = {"before": load_before, "after": os.getloadavg()}
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    text = markdown(report)
    (args.output / "results.md").write_text(text)
    chart(report, args.output / "chart.png")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
