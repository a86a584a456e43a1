"""Real processes for the demo, the tests and benchmarks: the Oracle simulator and mitmdump.

Each is started on a free loopback port, its output goes to a file (a full pipe would block it),
and `stop()` always ends it.
"""

import contextlib
import json
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
ADDON = REPO / "addon" / "gomodel.py"
SIMULATOR = REPO / "scripts" / "oracle_simulator.py"
MITMDUMP = Path(sys.executable).parent / "mitmdump"
MITMWEB = Path(sys.executable).parent / "mitmweb"
STARTUP_TIMEOUT = 30.0
# Variables of the machine that would change what the gateway or a client does.
CLEARED_ENV = re.compile(r"^(ORACLE_|GOMODEL_|(HTTPS?|ALL|NO)_PROXY$|SSL_CERT_)", re.IGNORECASE)


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not CLEARED_ENV.match(k)}
    env.update(extra)
    return env


@dataclass
class Process:
    popen: subprocess.Popen[bytes]
    output: Path

    def text(self) -> str:
        return self.output.read_text(errors="replace")

    def wait_for(self, pattern: str, timeout: float = STARTUP_TIMEOUT) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if match := re.search(pattern, self.text()):
                return match
            if self.popen.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{pattern!r} did not appear; output:\n{self.text()}")

    def stop(self) -> None:
        # SIGINT first (mitmdump's orderly stop); SIGTERM for a process started from a
        # background job, which ignores SIGINT; then SIGKILL.
        for stop_signal, wait in ((signal.SIGINT, 3), (signal.SIGTERM, 7), (signal.SIGKILL, None)):
            if self.popen.poll() is None:
                self.popen.send_signal(stop_signal)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.popen.wait(timeout=wait)


def free_port() -> int:
    """A loopback port nothing listens on (for a server to take, or to be refused by)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def spawn(args: list[str], output: Path, env: dict[str, str]) -> Process:
    with output.open("wb") as sink:
        popen = subprocess.Popen(
            args, stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
        )
    return Process(popen, output)


@dataclass
class Simulator:
    process: Process
    url: str
    ca: Path
    api_key: str

    def base_url(self, path: str = "/20231130/actions/v1") -> str:
        return self.url + path

    def _call(self, method: str, path: str, document: Any = None) -> Any:
        data = json.dumps(document).encode() if document is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method)
        context = ssl.create_default_context(cafile=str(self.ca))
        opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context)
        )
        with opener.open(request, timeout=10) as response:
            return json.load(response)

    def requests(self) -> list[dict[str, Any]]:
        """Every request the simulator received (control calls excepted), oldest first."""
        return self._call("GET", "/_sim/requests")

    def oracle_env(self, models: str, **extra: str) -> dict[str, str]:
        """ORACLE_* variables making this simulator the gateway's provider "oracle"."""
        return {
            "ORACLE_BASE_URL": self.base_url(),
            "ORACLE_API_KEY": self.api_key,
            "ORACLE_MODELS": models,
            **extra,
        }

    def posts(self) -> list[dict[str, Any]]:
        """The generation requests received (model discovery's GET /models left out)."""
        return [r for r in self.requests() if r["method"] == "POST"]

    def reset(self) -> None:
        """Forget received requests and restore the settings the simulator started with."""
        self._call("POST", "/_sim/reset", {})

    def configure(self, **settings: Any) -> None:
        self._call("POST", "/_sim/settings", settings)


def start_simulator(
    workdir: Path, api_key: str, *extra: str, script: Path = SIMULATOR
) -> Simulator:
    """The Oracle simulator (or a script that runs it with other settings, as the bench's)."""
    workdir.mkdir(parents=True, exist_ok=True)
    process = spawn(
        [
            sys.executable,
            str(script),
            "--port",
            "0",
            "--cert-dir",
            str(workdir),
            "--api-key",
            api_key,
            *extra,
        ],
        workdir / "simulator.log",
        clean_env(),
    )
    match = process.wait_for(r"listening at (https://\S+)")
    return Simulator(process, match.group(1), workdir / "ca.pem", api_key)


@dataclass
class Gateway:
    process: Process
    port: int
    confdir: Path
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def proxy(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ca(self) -> Path:
        return self.confdir / "mitmproxy-ca-cert.pem"

    def log(self) -> str:
        return self.process.text()

    def stop(self) -> None:
        self.process.stop()


def mitmdump_args(
    confdir: Path, ca: Path | None, *options: str, tool: Path = MITMDUMP
) -> list[str]:
    """mitmdump (or mitmweb) with the addon on a free loopback port."""
    args = [
        str(tool),
        "--listen-host",
        "127.0.0.1",
        "-p",
        "0",
        "--set",
        f"confdir={confdir}",
        "-s",
        str(ADDON),
    ]
    if ca:
        args += ["--set", f"ssl_verify_upstream_trusted_ca={ca}"]
    # Each option once: mitmproxy silently unloads a script whose option is set twice.
    if not any("gomodel_usage_db=" in option for option in options):
        args += ["--set", f"gomodel_usage_db={confdir.parent / 'usage.db'}"]  # not ~/.gomodel
    return args + list(options)


def start_gateway(
    workdir: Path, env: dict[str, str], *options: str, ca: Path | None = None
) -> Gateway:
    """mitmdump with the addon; `env` holds the gateway's ORACLE_* and GOMODEL_* variables."""
    workdir.mkdir(parents=True, exist_ok=True)
    confdir = workdir / "mitmproxy"
    process = spawn(
        mitmdump_args(confdir, ca, *options), workdir / "mitmdump.log", clean_env(**env)
    )
    match = process.wait_for(r"proxy(?: \(\S+ mode\))? listening at \S+:(\d+)")
    return Gateway(process, int(match.group(1)), confdir)


def start_mitmweb(
    workdir: Path,
    env: dict[str, str],
    web_port: int,
    password: str,
    *options: str,
    ca: Path | None = None,
) -> Gateway:
    """mitmweb with the addon, its UI on 127.0.0.1:web_port behind `password`."""
    workdir.mkdir(parents=True, exist_ok=True)
    web = [
        "--web-host",
        "127.0.0.1",
        "--web-port",
        str(web_port),
        "--set",
        "web_open_browser=false",
        "--set",
        f"web_password={password}",
    ]
    args = mitmdump_args(workdir / "mitmproxy", ca, *web, *options, tool=MITMWEB)
    process = spawn(args, workdir / "mitmweb.log", clean_env(**env))
    match = process.wait_for(r"proxy(?: \(\S+ mode\))? listening at \S+:(\d+)")
    return Gateway(process, int(match.group(1)), workdir / "mitmproxy")


def run_mitmdump_until_exit(
    workdir: Path, env: dict[str, str], *options: str, timeout: float = STARTUP_TIMEOUT
) -> subprocess.CompletedProcess[str]:
    """mitmdump expected to stop by itself (a startup error): its exit status and output."""
    workdir.mkdir(parents=True, exist_ok=True)
    args = mitmdump_args(workdir / "mitmproxy", None, *options)
    try:
        return subprocess.run(
            args,
            capture_output=True,
            text=True,
            env=clean_env(**env),
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"mitmdump kept running; output:\n{e.stdout}") from e
