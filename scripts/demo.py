"""The gateway end to end with no Oracle account: the bundled Oracle simulator behind mitmdump.

Starts the simulator and `mitmdump -s addon/gomodel.py` on free loopback ports, runs the three
verification calls (models, responses, chat completions) straight to the proxy port, streams one
chat completion through HTTPS_PROXY to https://gomodel.local, shows the gateway's log, and stops
both. With --keep they stay up until Ctrl-C so you can try your own calls. With --openai-app the
gateway also answers for api.openai.com and aliases OpenAI's model names (`gpt-*`) to an Oracle
model, so apps hard-wired to OpenAI (`llm`, the Agents SDK) work through HTTPS_PROXY unchanged.
"""

import argparse
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from processes import Gateway, clean_env, start_gateway, start_simulator

HERE = Path(__file__).resolve().parent
DEMO_KEY = "sk-demo-oracle-key"
DEMO_MODELS = "openai.gpt-oss-120b,xai.grok-4,meta.llama-3.3-70b-instruct"
# --openai-app: the hostname such apps call, and where their model names go.
OPENAI_HOSTS = "gomodel.local,api.openai.com"
OPENAI_ALIASES = "gpt-*=openai.gpt-oss-120b"
CURL = ("curl", "-sS", "-H", "content-type: application/json")


def banner(text: str) -> None:
    print(f"\n=== {text} ===", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", action="store_true", help="keep running until Ctrl-C")
    parser.add_argument(
        "--openai-app",
        action="store_true",
        help=f"also serve api.openai.com, with the alias {OPENAI_ALIASES}",
    )
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="gomodel-demo-"))
    simulator = start_simulator(workdir / "simulator", DEMO_KEY, "--chunk-delay", "0.05")
    gateway = None
    try:
        env = simulator.oracle_env(DEMO_MODELS)
        options = []
        if args.openai_app:
            env["GOMODEL_ALIASES"] = OPENAI_ALIASES
            # Closed: whatever else such an app calls does not leave the machine through it.
            options = [
                "--set",
                f"gomodel_hosts={OPENAI_HOSTS}",
                "--set",
                "gomodel_passthrough=false",
            ]
        gateway = start_gateway(workdir / "gateway", env, *options, ca=simulator.ca)
        banner(f"Oracle simulator at {simulator.url}; gateway (mitmdump) at {gateway.url}")

        banner("The three verification calls, straight to the proxy port")
        verify = subprocess.run(
            [sys.executable, str(HERE / "verify.py"), "--base-url", f"{gateway.url}/v1"],
            env=clean_env(),
        )

        banner("A streamed chat completion through HTTPS_PROXY to https://gomodel.local")
        stream = post_through_proxy(
            gateway,
            "https://gomodel.local/v1/chat/completions",
            '{"model": "xai.grok-4", "stream": true, '
            '"messages": [{"role": "user", "content": "stream please"}]}',
            "-N",
        )
        lines = [line for line in stream.stdout.splitlines() if line]
        for line in [*lines[:3], "...", *lines[-2:]]:
            print("  " + (line if len(line) < 140 else line[:137] + "..."))
        print(f"  ({len(lines)} events)")

        app_ok = True
        if args.openai_app:
            banner("An app hard-wired to OpenAI: gpt-4o-mini at https://api.openai.com")
            app_ok = app_call(gateway)

        banner("What the gateway logged")
        for line in gateway.log().splitlines():
            if "gomodel" in line:
                print("  " + line)

        if args.keep:
            banner("Running until Ctrl-C; try:")
            print(f"  curl {gateway.url}/v1/models")
            print(
                f"  HTTPS_PROXY={gateway.proxy} curl --cacert {gateway.ca} "
                "https://gomodel.local/v1/models"
            )
            if args.openai_app:
                print("  apps hard-wired to OpenAI, e.g. llm (pip install llm):")
                print(
                    f"  HTTPS_PROXY={gateway.proxy} SSL_CERT_FILE={gateway.ca} "
                    'OPENAI_API_KEY=unused llm "hi"'
                )
            with_ctrl_c_stop()
        ok = (
            verify.returncode == 0
            and stream.returncode == 0
            and lines[-1] == "data: [DONE]"
            and app_ok
        )
        banner("demo " + ("succeeded" if ok else "FAILED"))
        return 0 if ok else 1
    finally:
        if gateway:
            gateway.stop()
        simulator.process.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def post_through_proxy(
    gateway: Gateway, url: str, body: str, *flags: str
) -> subprocess.CompletedProcess[str]:
    """curl POSTs JSON to `url` through HTTPS_PROXY, trusting the gateway's CA."""
    return subprocess.run(
        [*CURL, *flags, "--cacert", str(gateway.ca), url, "-d", body],
        env=clean_env(HTTPS_PROXY=gateway.proxy),
        capture_output=True,
        text=True,
    )


def app_call(gateway: Gateway) -> bool:
    """What an app hard-wired to OpenAI sends, with an OpenAI model name; True if an Oracle
    model answered."""
    call = post_through_proxy(
        gateway,
        "https://api.openai.com/v1/chat/completions",
        '{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}',
    )
    try:
        answer = json.loads(call.stdout)
        model, text = answer["model"], answer["choices"][0]["message"]["content"]
    except (ValueError, LookupError, TypeError):
        print(f"  failed: {call.stdout[:300]}{call.stderr[:300]}")
        return False
    print(f"  answered by {model}: {text}")
    return model == OPENAI_ALIASES.split("=")[1]


def with_ctrl_c_stop() -> None:
    # `kill` too stops it cleanly, simulator and gateway included.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        print()


if __name__ == "__main__":
    sys.exit(main())
