"""Load test: many concurrent streamed chat completions through a real mitmdump + gateway.

Starts the Oracle simulator and the gateway on loopback, keeps --streams streams running for
--duration seconds, and checks that every stream arrived whole and in order: the bytes each client
received hash to what the simulator recorded sending for that opc-request-id, and the text is the
one asked for. It samples the gateway's memory (RSS) throughout. Bounded: it stops by itself.

    .venv/bin/python scripts/load_test.py --streams 100 --duration 30

Exit status 1 on any failed or altered stream, or when memory grew more than --max-growth-mib
over the second half of the run (the first half is warm-up: with 100 streams mitmdump's heap
fills to its working size in about 20 s, then stays flat).
"""

import argparse
import hashlib
import http.client
import json
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from processes import start_gateway, start_simulator

ORACLE_KEY = "sk-load-test-oracle"
MODEL = "xai.grok-4"


@dataclass
class Outcome:
    streams: int = 0
    bytes: int = 0
    errors: list[str] = field(default_factory=list)
    digests: dict[str, str] = field(default_factory=dict)  # opc-request-id -> sha256
    lock: threading.Lock = field(default_factory=threading.Lock)


def expected_text(prompt: str) -> str:
    return f"Hello from {MODEL} on the Oracle simulator. You said: {prompt}"


def stream_once(port: int, prompt: str) -> tuple[str, str, int]:
    """One streamed chat through the gateway: (opc-request-id, sha256 of the body, size)."""
    body = json.dumps(
        {"model": MODEL, "stream": True, "messages": [{"role": "user", "content": prompt}]}
    )
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.request(
            "POST", "/v1/chat/completions", body=body, headers={"Content-Type": "application/json"}
        )
        response = connection.getresponse()
        data = response.read()
    finally:
        connection.close()
    if response.status != 200:
        raise RuntimeError(f"HTTP {response.status}: {data[:200]!r}")
    events = [line[6:] for line in data.decode().split("\n\n") if line.startswith("data: ")]
    if events[-1:] != ["[DONE]"]:
        raise RuntimeError("stream did not end with [DONE]")
    text = "".join(
        chunk["choices"][0]["delta"].get("content") or ""
        for chunk in map(json.loads, events[:-1])
        if chunk["choices"]
    )
    if text != expected_text(prompt):
        raise RuntimeError(f"stream text differs: {text!r}")
    return response.getheader("opc-request-id", ""), hashlib.sha256(data).hexdigest(), len(data)


def worker(port: int, index: int, deadline: float, outcome: Outcome) -> None:
    count = 0
    while time.monotonic() < deadline:
        prompt = f"load {index}-{count}"
        count += 1
        try:
            request_id, digest, size = stream_once(port, prompt)
        except Exception as e:  # every failure is reported, none stops the run
            with outcome.lock:
                outcome.errors.append(f"{prompt}: {type(e).__name__}: {e}")
            continue
        with outcome.lock:
            outcome.streams += 1
            outcome.bytes += size
            outcome.digests[request_id] = digest


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def sample_memory(pid: int, stop: threading.Event, samples: list[tuple[float, float]]) -> None:
    start = time.monotonic()
    while not stop.wait(0.5):
        samples.append((time.monotonic() - start, rss_mib(pid)))


def run(streams: int, duration: float, chunk_delay: float, max_growth_mib: float) -> dict:
    workdir = Path(tempfile.mkdtemp(prefix="gomodel-load-"))
    simulator = start_simulator(workdir / "sim", ORACLE_KEY, "--chunk-delay", str(chunk_delay))
    gateway = None
    try:
        gateway = start_gateway(
            workdir / "gw",
            simulator.oracle_env(MODEL),
            "--set",
            "flow_detail=0",
            ca=simulator.ca,
        )
        outcome, samples, stop = Outcome(), [], threading.Event()
        sampler = threading.Thread(
            target=sample_memory, args=(gateway.process.popen.pid, stop, samples), daemon=True
        )
        sampler.start()
        deadline = time.monotonic() + duration
        threads = [
            threading.Thread(target=worker, args=(gateway.port, i, deadline, outcome))
            for i in range(streams)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=duration + 120)
        stop.set()
        sampler.join()

        sent = {r["request_id"]: r.get("response_sha256") for r in simulator.posts()}
        altered = [rid for rid, digest in outcome.digests.items() if sent.get(rid) != digest]
        warm = [rss for at, rss in samples if at >= duration / 2] or [
            rss_mib(gateway.process.popen.pid)
        ]
        report = {
            "concurrent_streams": streams,
            "duration_s": duration,
            "streams_completed": outcome.streams,
            "streams_per_s": round(outcome.streams / duration, 1),
            "bytes_delivered": outcome.bytes,
            "errors": len(outcome.errors),
            "altered_streams": len(altered),
            "simulator_requests": len(sent),
            "rss_at_half_time_mib": round(warm[0], 1),
            "rss_peak_mib": round(max(rss for _, rss in samples), 1) if samples else None,
            "rss_end_mib": round(warm[-1], 1),
        }
        growth = warm[-1] - warm[0]
        report["ok"] = (
            not outcome.errors
            and not altered
            and outcome.streams > 0
            and len(sent) == outcome.streams
            and growth <= max_growth_mib
        )
        for error in outcome.errors[:10]:
            print("error:", error, file=sys.stderr)
        return report
    finally:
        if gateway:
            gateway.stop()
        simulator.process.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=100, help="concurrent streams (1-500)")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds (1-600)")
    parser.add_argument(
        "--chunk-delay", type=float, default=0.05, help="seconds between the simulator's chunks"
    )
    parser.add_argument(
        "--max-growth-mib", type=float, default=32.0, help="allowed RSS growth after warm-up"
    )
    args = parser.parse_args()
    if not (1 <= args.streams <= 500 and 1 <= args.duration <= 600):
        parser.error("--streams must be 1-500 and --duration 1-600")
    report = run(args.streams, args.duration, args.chunk_delay, args.max_growth_mib)
    print(json.dumps(report, indent=2))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
