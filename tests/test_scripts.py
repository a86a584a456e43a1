"""The user-facing scripts: the demo and the verify script run for real."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from processes import REPO, Gateway, Simulator, clean_env

SCRIPTS = REPO / "scripts"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env=clean_env(), timeout=120
    )


def test_demo_runs_the_three_calls_and_a_stream_then_exits_0() -> None:
    result = run(str(SCRIPTS / "demo.py"))

    assert result.returncode == 0, result.stdout + result.stderr
    assert "verify: all three calls succeeded" in result.stdout
    assert "data: [DONE]" in result.stdout
    assert "demo succeeded" in result.stdout
    assert "sk-demo-oracle-key" not in result.stdout


def test_demo_for_openai_apps_answers_an_openai_name_from_the_aliased_oracle_model() -> None:
    result = run(str(SCRIPTS / "demo.py"), "--openai-app")

    assert result.returncode == 0, result.stdout + result.stderr
    assert "answered by openai.gpt-oss-120b" in result.stdout
    assert "requested=gpt-4o-mini" in result.stdout
    assert "demo succeeded" in result.stdout


def test_verify_works_through_https_proxy(gateway: Gateway, chicago: Simulator) -> None:
    result = run(
        str(SCRIPTS / "verify.py"),
        "--base-url",
        "https://gomodel.local/v1",
        "--proxy",
        gateway.proxy,
        "--cacert",
        str(gateway.ca),
        "--model",
        "xai.grok-4",
    )

    assert result.returncode == 0, result.stdout
    assert [r["path"] for r in chicago.requests()] == [
        "/20231130/actions/v1/responses",
        "/20231130/actions/v1/chat/completions",
    ]


def test_verify_fails_when_a_call_fails(gateway: Gateway) -> None:
    result = run(
        str(SCRIPTS / "verify.py"), "--base-url", f"{gateway.url}/v1", "--model", "no.such-model"
    )
    assert result.returncode == 1
    assert "HTTP 404" in result.stdout and "a call failed" in result.stdout


def test_setup_explains_when_no_recent_python_exists(tmp_path: Path) -> None:
    # A copy of the script in an empty tree, with a PATH and HOME that hold no Python >= 3.12.
    (tmp_path / "scripts").mkdir()
    shutil.copy(SCRIPTS / "setup", tmp_path / "scripts" / "setup")
    (tmp_path / "home").mkdir()
    tools = tmp_path / "bin"
    tools.mkdir()
    for tool in ("dirname", "ls", "sort"):
        (tools / tool).symlink_to(shutil.which(tool))
    result = subprocess.run(
        [shutil.which("bash"), str(tmp_path / "scripts" / "setup")],
        capture_output=True,
        text=True,
        env={"PATH": str(tools), "HOME": str(tmp_path / "home")},
        timeout=60,
    )
    assert result.returncode == 1
    assert "needs Python 3.12 or newer" in result.stderr
    assert not (tmp_path / ".venv").exists()


def test_short_load_run_delivers_every_stream_byte_for_byte() -> None:
    result = run(str(SCRIPTS / "load_test.py"), "--streams", "20", "--duration", "4")

    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["streams_completed"] > 20
    assert report["errors"] == 0 and report["altered_streams"] == 0
    assert report["simulator_requests"] == report["streams_completed"]


def wrk() -> None:
    """wrk, installed by the repo's own script when missing; a skip says why not."""
    if shutil.which("wrk"):
        return
    installed = subprocess.run(
        ["bash", str(SCRIPTS / "install-wrk")], capture_output=True, text=True, timeout=600
    )
    if installed.returncode or not shutil.which("wrk"):
        pytest.skip(f"wrk could not be installed: {installed.stderr.strip()[-300:]}")


def test_benchmark_quick_run_reports_every_row_and_target(tmp_path: Path) -> None:
    wrk()
    result = subprocess.run(
        [
            sys.executable,
            str(SCRIPTS / "bench.py"),
            "--quick",
            "--no-litellm",
            "--output",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=300,
    )

    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((tmp_path / "results.json").read_text())
    teams = ["keys", "keys+redis"] if shutil.which("redis-server") else ["keys"]
    assert report["rows"] == ["direct", "bare", "gomodel", "gomodel-noledger", *teams]
    assert report["table"]["chat c=10 errors"] == dict.fromkeys(report["rows"], 0)
    assert (
        "## Teams: client keys, limits, the ledger, Redis" in (tmp_path / "results.md").read_text()
    )
    assert report["table"]["stream chunks seen"]["gomodel"] == 13  # nothing held back
    assert {t["target"] for t in report["targets"]} >= {"50 MB stream: RSS growth < 10 MiB"}
    assert (tmp_path / "chart.png").stat().st_size > 10_000
    assert "| chat c=1 req/s |" in (tmp_path / "results.md").read_text()
