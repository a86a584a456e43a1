"""Real OpenAI clients and apps through the gateway, on the bundled Oracle simulator.

Installs a pinned matrix of clients (Python ones in .venv-clients, Node's `openai` in
.clients-node), starts the simulator and a gateway that also answers for api.openai.com, with
aliases for the model names those clients send by default, then runs every client through every
way in that makes sense for it and prints a table: client, version, way in, call, result. Exits
1 if any cell failed. Every call stays on loopback; only the installs reach PyPI and npm.

Not part of CI (it installs a lot): run it when a client or the gateway changes.
"""

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from processes import clean_env, start_gateway, start_simulator

REPO = Path(__file__).resolve().parents[1]
CLIENTS = REPO / "scripts" / "clients"
PY_VENV = REPO / ".venv-clients"
NODE_DIR = REPO / ".clients-node"

# Pinned after `pip index versions NAME` / `npm view NAME version` (2026-11-26).
PY_PACKAGES = ("openai==3.57.0", "llm==0.36", "langchain-openai==1.7.4", "openai-agents==0.24.0")
NODE_PACKAGES = {"openai": "7.57.0", "undici": "7.30.2"}  # undici 8 needs Node >= 22.19

SIM_KEY = "sk-try-clients-oracle-key"
MODELS = "openai.gpt-oss-120b,xai.grok-4,meta.llama-3.3-70b-instruct"
# The names the clients send by default, and the Oracle model each becomes.
ALIASES = {
    "gpt-5.6-luna": "openai.gpt-oss-120b",  # llm 0.36 and openai-agents 0.24 default
    "gpt-3.5-turbo": "xai.grok-4",  # langchain-openai ChatOpenAI default
    "gpt-4o-mini": "openai.gpt-oss-120b",  # what our openai-python / Node "app" sends
}
DIRECT_MODEL = "xai.grok-4"  # sent by openai-python and Node when they name the gateway
APP_MODEL = "gpt-4o-mini"  # sent by them as apps hard-wired to api.openai.com
CLIENT_KEY = "sk-anything"  # clients insist on a key; the gateway drops it
# Variables of the machine that would change what a client does.
CLIENT_ENV = re.compile(r"^(OPENAI_|LLM_|LANGCHAIN_|LANGSMITH_|NODE_|NPM_CONFIG_)", re.IGNORECASE)


@dataclass(frozen=True)
class Way:
    name: str
    base: str | None  # "port", "http", "https", or None for the client's default api.openai.com
    proxy: str | None  # "http" or "https": which proxy variable points at the gateway


WAYS = {
    "port": Way("port + base_url", "port", None),
    "http": Way("HTTP_PROXY + http://gomodel.local", "http", "http"),
    "https": Way("HTTPS_PROXY + https://gomodel.local", "https", "https"),
    "openai": Way("HTTPS_PROXY + api.openai.com (app)", None, "https"),
}


@dataclass(frozen=True)
class Client:
    name: str
    program: str  # under scripts/clients
    calls: tuple[str, ...]
    ways: tuple[str, ...]
    default_model: str | None  # None: the client has no default, we name a model

    def model_for(self, way: Way) -> str | None:
        if self.default_model:
            return None
        return APP_MODEL if way.base is None else DIRECT_MODEL

    def expect(self, way: Way) -> str:
        model = self.default_model or self.model_for(way) or ""
        return ALIASES.get(model, model)


ALL_WAYS = tuple(WAYS)
MATRIX = (
    Client(
        "openai-python", "openai_python.py", ("chat", "chat stream", "responses"), ALL_WAYS, None
    ),
    Client("llm CLI", "llm_cli.py", ('llm "Say hello"',), ("openai",), "gpt-5.6-luna"),
    Client(
        "langchain-openai",
        "langchain_openai_client.py",
        ("invoke", "stream"),
        ALL_WAYS,
        "gpt-3.5-turbo",
    ),
    Client(
        "openai-agents",
        "openai_agents_client.py",
        ("Runner.run_sync", "trace export"),
        ALL_WAYS,
        "gpt-5.6-luna",
    ),
    Client(
        "openai (Node)", "openai_node.cjs", ("chat", "chat stream", "responses"), ALL_WAYS, None
    ),
)


@dataclass
class Row:
    client: str
    version: str
    way: str
    call: str
    ok: bool
    detail: str


def say(text: str) -> None:
    print(f"try-clients: {text}", flush=True)


# --- installs ------------------------------------------------------------------------------


def install_python() -> None:
    """.venv-clients with the same Python as .venv, the pinned packages (again only on change)."""
    base = Path(getattr(sys, "_base_executable", sys.executable))
    wanted = f"{sys.version_info.major}.{sys.version_info.minor}"
    python = PY_VENV / "bin" / "python"
    have = ""
    if python.exists():
        have = subprocess.run(
            [python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
        ).stdout.strip()
    if have != wanted:
        say(f"creating {PY_VENV.name} with {base}")
        shutil.rmtree(PY_VENV, ignore_errors=True)
        subprocess.run([base, "-m", "venv", PY_VENV], check=True)
    stamp = PY_VENV / ".try-clients"
    if stamp.exists() and stamp.read_text() == "\n".join(PY_PACKAGES):
        return
    say(f"installing {', '.join(PY_PACKAGES)} into {PY_VENV.name}")
    pip = [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, *PY_PACKAGES], check=True)
    stamp.write_text("\n".join(PY_PACKAGES))


def install_node() -> str | None:
    """.clients-node with the pinned npm packages; None when ready, else why it cannot be."""
    if not shutil.which("node") or not shutil.which("npm"):
        return "node or npm not found on PATH"
    NODE_DIR.mkdir(exist_ok=True)
    manifest = {
        "private": True,
        "description": "scripts/try-clients",
        "dependencies": NODE_PACKAGES,
    }
    text = json.dumps(manifest, indent=2) + "\n"
    package = NODE_DIR / "package.json"
    stamp = NODE_DIR / ".try-clients"
    if package.exists() and package.read_text() == text and stamp.exists():
        return None
    package.write_text(text)
    pins = ", ".join(f"{name}@{v}" for name, v in NODE_PACKAGES.items())
    say(f"installing {pins} into {NODE_DIR.name} (npm)")
    done = subprocess.run(["npm", "install", "--no-audit", "--no-fund"], cwd=NODE_DIR)
    if done.returncode:
        return f"npm install failed (exit status {done.returncode})"
    stamp.write_text("")
    return None


# --- runs ----------------------------------------------------------------------------------


def client_env(way: Way, gateway_proxy: str, ca: Path, scratch: Path) -> dict[str, str]:
    env = {k: v for k, v in clean_env().items() if not CLIENT_ENV.match(k)}
    env |= {
        "OPENAI_API_KEY": CLIENT_KEY,
        "LLM_USER_PATH": str(scratch / "llm"),
        "NODE_PATH": str(NODE_DIR / "node_modules"),
        "PYTHONUNBUFFERED": "1",
    }
    if way.proxy:
        names = (
            ("HTTP_PROXY", "http_proxy") if way.proxy == "http" else ("HTTPS_PROXY", "https_proxy")
        )
        env |= dict.fromkeys(names, gateway_proxy)
        env["NODE_USE_ENV_PROXY"] = "1"  # Node 24+ fetch; before 24 see openai_node.cjs
    if way.proxy == "https":
        env |= {"SSL_CERT_FILE": str(ca), "NODE_EXTRA_CA_CERTS": str(ca)}
    return env


def run_cell(client: Client, way: Way, port: int, env: dict[str, str], timeout: float) -> list[Row]:
    if client.program.endswith(".cjs"):
        command = ["node", str(CLIENTS / client.program)]
    else:
        command = [str(PY_VENV / "bin" / "python"), str(CLIENTS / client.program)]
    base_urls = {
        "port": f"http://127.0.0.1:{port}/v1",
        "http": "http://gomodel.local/v1",
        "https": "https://gomodel.local/v1",
    }
    if way.base:
        command += ["--base-url", base_urls[way.base]]
    if model := client.model_for(way):
        command += ["--model", model]
    command += ["--expect", client.expect(way)]
    # A session of its own, so that a timeout ends the client and whatever it started (llm).
    with subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    ) as process:
        try:
            out, err = process.communicate(timeout=timeout)
            problem = f"exit status {process.returncode}"
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            out, err = process.communicate()
            problem = f"no answer within {timeout:g} s"
    version, results = "?", {}
    for line in out.splitlines():
        if line.startswith("@@try-clients "):
            document = json.loads(line.removeprefix("@@try-clients "))
            if "version" in document:
                version = document["version"]
            else:
                results[document["call"]] = document
    rows = []
    for name in client.calls:
        if name in results:
            result = results[name]
            rows.append(Row(client.name, version, way.name, name, result["ok"], result["detail"]))
        else:
            last = (err.strip().splitlines() or [""])[-1]
            detail = f"not run: {problem}" + (f": {last}" if last else "")
            rows.append(Row(client.name, version, way.name, name, False, detail))
    return rows


def short(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def print_table(rows: list[Row], markdown: bool) -> None:
    heads = ("client", "version", "way in", "call", "result")
    cells = [
        (r.client, r.version, r.way, r.call, ("ok: " if r.ok else "FAIL: ") + short(r.detail, 150))
        for r in rows
    ]
    if markdown:
        print("| " + " | ".join(heads) + " |")
        print("|" + "---|" * len(heads))
        for cell in cells:
            print("| " + " | ".join(c.replace("|", "\\|") for c in cell) + " |")
        return
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(heads[:-1])]
    for line in [heads, *cells]:
        print("  ".join(c.ljust(w) for c, w in zip(line[:-1], widths, strict=True)), line[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--timeout", type=float, default=120, help="seconds per client and way")
    parser.add_argument(
        "--only", action="append", choices=[c.name for c in MATRIX], help="these clients only"
    )
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    parser.add_argument("--no-install", action="store_true", help="use what is installed")
    parser.add_argument("--keep", action="store_true", help="keep the logs' folder")
    args = parser.parse_args()
    matrix = [c for c in MATRIX if not args.only or c.name in args.only]

    node_problem = None
    if not args.no_install:
        install_python()
        if any(c.program.endswith(".cjs") for c in matrix):
            node_problem = install_node()

    workdir = Path(tempfile.mkdtemp(prefix="gomodel-try-clients-"))
    simulator = start_simulator(workdir / "simulator", SIM_KEY)
    gateway = None
    rows: list[Row] = []
    try:
        aliases = ",".join(f"{alias}={target}" for alias, target in ALIASES.items())
        env = simulator.oracle_env(MODELS, GOMODEL_ALIASES=aliases)
        options = ("gomodel_hosts=gomodel.local,api.openai.com", "gomodel_passthrough=false")
        gateway = start_gateway(
            workdir / "gateway", env, *(a for o in options for a in ("--set", o)), ca=simulator.ca
        )
        say(f"simulator {simulator.url}, gateway {gateway.url}, GOMODEL_ALIASES={aliases}")
        for client in matrix:
            for key in client.ways:
                way = WAYS[key]
                if node_problem and client.program.endswith(".cjs"):
                    rows += [
                        Row(client.name, "?", way.name, c, False, node_problem)
                        for c in client.calls
                    ]
                    continue
                cell_env = client_env(way, gateway.proxy, gateway.ca, workdir)
                cell = run_cell(client, way, gateway.port, cell_env, args.timeout)
                for row in cell:
                    say(f"{row.client} | {row.way} | {row.call}: {'ok' if row.ok else 'FAIL'}")
                rows += cell
    finally:
        if gateway:
            gateway.stop()
        simulator.process.stop()

    failed = sum(not r.ok for r in rows)
    print()
    print(f"try-clients {date.today().isoformat()}, Python {sys.version.split()[0]}:")
    print_table(rows, args.markdown)
    print(f"\n{len(rows) - failed} passed, {failed} failed")
    if failed or args.keep:
        say(f"logs kept in {workdir} (gateway/mitmdump.log, simulator/simulator.log)")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    os.chdir(REPO)
    sys.exit(main())
