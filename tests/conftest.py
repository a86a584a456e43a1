"""Shared fixtures: two Oracle simulators (two regions) and a gateway in front of both."""

import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from capture import CaptureServer
from hypothesis import settings
from openai import DefaultHttpxClient, OpenAI
from processes import Gateway, Simulator, start_gateway, start_simulator
from stores import PostgresServer, RedisServer, start_postgres, start_redis

# `pytest --hypothesis-profile=deep` for a long fuzzing run.
settings.register_profile("default", max_examples=300, deadline=None)
settings.register_profile("deep", max_examples=20_000, deadline=None)

CHICAGO_KEY = "sk-oracle-chicago-5f0c7a1e9b2d4c68"
FRANKFURT_KEY = "sk-oracle-frankfurt-83d1e6b0a4f27c95"
CLIENT_KEY = "sk-client-should-never-reach-oracle"
CHICAGO_MODELS = ["openai.gpt-oss-120b", "xai.grok-4", "meta.llama-3.3-70b-instruct"]
FRANKFURT_MODELS = ["openai.gpt-oss-120b", "google.gemini-2.5-flash"]

TWO_REGIONS_YAML = f"""
providers:
  oracle:
    type: oracle
    base_url: ${{CHICAGO_URL}}
    api_key: ${{CHICAGO_KEY}}
    models: {CHICAGO_MODELS}
    models_mode: allowlist
  oracle-eu:
    base_url: ${{FRANKFURT_URL}}
    api_key: ${{FRANKFURT_KEY}}
    models: {FRANKFURT_MODELS}
    models_mode: allowlist
"""


def openai_client(gateway: Gateway, key: str = CLIENT_KEY) -> OpenAI:
    """The official SDK straight to the gateway's port, its own retries off."""
    return OpenAI(
        base_url=f"{gateway.url}/v1",
        api_key=key,
        max_retries=0,
        http_client=DefaultHttpxClient(trust_env=False),
    )


@pytest.fixture(scope="session")
def simulators(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Simulator, Simulator]]:
    base = tmp_path_factory.mktemp("simulators")
    chicago = start_simulator(base / "chicago", CHICAGO_KEY)
    try:
        frankfurt = start_simulator(base / "frankfurt", FRANKFURT_KEY)
    except BaseException:
        chicago.process.stop()
        raise
    yield chicago, frankfurt
    chicago.process.stop()
    frankfurt.process.stop()


@pytest.fixture
def chicago(simulators: tuple[Simulator, Simulator]) -> Simulator:
    simulators[0].reset()
    return simulators[0]


@pytest.fixture
def frankfurt(simulators: tuple[Simulator, Simulator]) -> Simulator:
    simulators[1].reset()
    return simulators[1]


@pytest.fixture
def capture() -> Iterator[CaptureServer]:
    """A server recording whatever reaches it: where a followed redirect would send the key."""
    with CaptureServer() as server:
        yield server


def capture_url(capture: CaptureServer, path: str = "/captured") -> str:
    return f"http://{capture.address}{path}"


@pytest.fixture(scope="session")
def shared_ca(tmp_path_factory: pytest.TempPathFactory, simulators) -> Path:
    """One file trusting both simulators' CAs, for mitmproxy's upstream verification."""
    bundle = tmp_path_factory.mktemp("ca") / "simulators.pem"
    bundle.write_text("".join(sim.ca.read_text() for sim in simulators))
    return bundle


def two_region_env(simulators: tuple[Simulator, Simulator]) -> dict[str, str]:
    chicago, frankfurt = simulators
    return {
        "CHICAGO_URL": chicago.base_url("/20231130/actions/v1"),
        "CHICAGO_KEY": CHICAGO_KEY,
        "FRANKFURT_URL": frankfurt.base_url("/openai/v1"),
        "FRANKFURT_KEY": FRANKFURT_KEY,
    }


@pytest.fixture(scope="session")
def gateway(
    tmp_path_factory: pytest.TempPathFactory,
    simulators: tuple[Simulator, Simulator],
    shared_ca: Path,
) -> Iterator[Gateway]:
    """mitmdump + addon with two providers: oracle (Chicago) and oracle-eu (Frankfurt)."""
    workdir = tmp_path_factory.mktemp("gateway")
    config = workdir / "gomodel.yaml"
    config.write_text(TWO_REGIONS_YAML)
    gateway = start_gateway(
        workdir,
        two_region_env(simulators),
        "--set",
        f"gomodel_config={config}",
        "--set",
        "gomodel_hosts=gomodel.local,api.openai.com",
        ca=shared_ca,
    )
    yield gateway
    gateway.stop()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real redis-server on a free loopback port, empty, no persistence; skips if missing."""
    server = start_redis(tmp_path_factory.mktemp("redis"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    """A real PostgreSQL cluster on a free loopback port (trust auth); skips if missing. Shared:
    tests that need an outage start their own with stores.start_postgres."""
    server = start_postgres(tmp_path_factory.mktemp("postgres"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """A new, empty database on the shared server."""
    name = f"ledger_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_server.url, autocommit=True) as connection:
        connection.execute(f"CREATE DATABASE {name}")
    return postgres_server.url.rsplit("/", 1)[0] + "/" + name
