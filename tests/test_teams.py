"""Teams, end to end through a real mitmdump: client keys with model allowlists, rate limits and
token budgets, per-key metrics; several gateways sharing limits through a real redis-server."""

import http.client
import json
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import pytest
import redis
from conftest import openai_client
from processes import Gateway, Process, Simulator, clean_env, free_port, spawn, start_gateway
from test_exposure import rss_kib
from test_observability import parse_samples, value

MASTER_KEY = "gm-admin-key-5d1e"
CI_KEY = "gm-ci-key-8b20"
BUDGET_KEY = "gm-budget-key-c3a7"
STREAMER_KEY = "gm-streamer-key-41fd"
HELLO = [{"role": "user", "content": "hi"}]
TEAMS_YAML = """
server:
  master_keys: ["${MASTER}"]
  keys:
    ci:
      key: ${CI}
      models: ["xai.*", gpt-4o-mini]
      requests_per_minute: 3
    budget:
      key: ${BUDGET}
      tokens_per_day: 10
    streamer:
      key: ${STREAMER}
      tokens_per_day: 1500
providers:
  oracle:
    base_url: ${URL}
    api_key: ${KEY}
    models: [xai.grok-4, openai.gpt-oss-120b]
    models_mode: allowlist
aliases:
  gpt-4o-mini: openai.gpt-oss-120b
"""


def start_team_gateway(workdir: Path, chicago: Simulator, *options: str) -> Gateway:
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "gomodel.yaml"
    config.write_text(TEAMS_YAML)
    env = {
        "URL": chicago.base_url(),
        "KEY": chicago.api_key,
        "MASTER": MASTER_KEY,
        "CI": CI_KEY,
        "BUDGET": BUDGET_KEY,
        "STREAMER": STREAMER_KEY,
    }
    return start_gateway(
        workdir / "gw", env, "--set", f"gomodel_config={config}", *options, ca=chicago.ca
    )


@pytest.fixture
def teams(tmp_path: Path, chicago: Simulator) -> Iterator[Gateway]:
    gateway = start_team_gateway(tmp_path, chicago)
    yield gateway
    gateway.stop()


def metrics(gateway: Gateway) -> str:
    connection = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=10)
    connection.request("GET", "/metrics", headers={"Authorization": f"Bearer {MASTER_KEY}"})
    return connection.getresponse().read().decode()


def sample(text: str, name: str, **labels: str) -> float:
    return value(parse_samples(text), name, **labels)


def test_a_key_calls_only_its_models_and_lists_only_them(
    teams: Gateway, chicago: Simulator
) -> None:
    ci = openai_client(teams, CI_KEY)
    posts_before = len(chicago.posts())

    assert ci.chat.completions.create(model="xai.grok-4", messages=HELLO).choices
    assert ci.chat.completions.create(model="gpt-4o-mini", messages=HELLO).choices  # by name
    with pytest.raises(openai.PermissionDeniedError) as refused:
        ci.responses.create(model="openai.gpt-oss-120b", input="hi")

    error = refused.value.body
    assert (error["code"], error["param"]) == ("model_not_allowed", "model")
    assert "'ci'" in error["message"] and CI_KEY not in error["message"]
    assert len(chicago.posts()) == posts_before + 2  # the refused call went nowhere
    assert [m.id for m in ci.models.list().data] == ["xai.grok-4", "gpt-4o-mini"]
    with pytest.raises(openai.PermissionDeniedError):
        ci.models.retrieve("openai.gpt-oss-120b")
    with pytest.raises(openai.NotFoundError) as unknown:
        ci.chat.completions.create(model="no.such-model", messages=HELLO)
    assert "available: xai.grok-4, gpt-4o-mini)" in unknown.value.message  # its models only
    admin = openai_client(teams, MASTER_KEY)
    assert {m.id for m in admin.models.list().data} == {
        "xai.grok-4",
        "openai.gpt-oss-120b",
        "gpt-4o-mini",
    }


def test_the_fourth_call_in_a_minute_gets_429_with_retry_after(teams: Gateway) -> None:
    ci = openai_client(teams, CI_KEY)
    for _ in range(3):
        ci.chat.completions.create(model="xai.grok-4", messages=HELLO)
    with pytest.raises(openai.RateLimitError) as refused:
        ci.chat.completions.create(model="xai.grok-4", messages=HELLO, stream=True)

    assert refused.value.body["code"] == "rate_limit_exceeded"
    assert 1 <= int(refused.value.response.headers["retry-after"]) <= 120
    admin = openai_client(teams, MASTER_KEY)  # master keys have no limits
    for _ in range(5):
        admin.chat.completions.create(model="xai.grok-4", messages=HELLO)
    text = metrics(teams)
    assert sample(text, "gomodel_key_requests_total", key="ci", status="200") == 3
    assert sample(text, "gomodel_key_requests_total", key="ci", status="429") == 1
    assert sample(text, "gomodel_key_refusals_total", key="ci", code="rate_limit_exceeded") == 1
    assert sample(text, "gomodel_key_requests_total", key="master", status="200") == 5
    assert CI_KEY not in text and MASTER_KEY not in text
    forbidden = http.client.HTTPConnection("127.0.0.1", teams.port, timeout=10)
    forbidden.request("GET", "/metrics", headers={"Authorization": f"Bearer {CI_KEY}"})
    assert forbidden.getresponse().status == 403  # other keys' names and use are not for ci


def test_a_streamed_answer_counts_against_the_budget_then_the_next_call_is_refused(
    teams: Gateway, chicago: Simulator
) -> None:
    budget = openai_client(teams, BUDGET_KEY)
    chunks = list(budget.chat.completions.create(model="xai.grok-4", messages=HELLO, stream=True))

    asked = chicago.posts()[-1]["body"]
    assert asked["stream_options"] == {"include_usage": True}  # the gateway asked for usage...
    assert all(chunk.usage is None for chunk in chunks)  # ...and kept it from this client
    with pytest.raises(openai.RateLimitError) as refused:
        budget.chat.completions.create(model="xai.grok-4", messages=HELLO)
    assert refused.value.body["code"] == "insufficient_quota"
    assert refused.value.body["type"] == "insufficient_quota"
    text = metrics(teams)
    assert sample(text, "gomodel_key_tokens_total", key="budget", direction="output") > 0


def test_calls_made_at_once_cannot_all_spend_the_same_budget(teams: Gateway) -> None:
    """Each admitted call reserves an estimate of its tokens: of ten calls sent together on a
    10-token budget, one is admitted."""
    budget = openai_client(teams, BUDGET_KEY)

    def call() -> int:
        try:
            budget.chat.completions.create(model="xai.grok-4", messages=HELLO)
        except openai.RateLimitError as refused:
            assert refused.body["code"] == "insufficient_quota"
            return 429
        return 200

    with ThreadPoolExecutor(10) as pool:
        statuses = list(pool.map(lambda _: call(), range(10)))
    assert sorted(statuses) == [200] + [429] * 9


def test_a_stream_its_client_leaves_is_charged_its_estimate(
    teams: Gateway, chicago: Simulator
) -> None:
    chicago.configure(chunk_delay=0.3)  # the client leaves long before the usage chunk
    streamer = openai_client(teams, STREAMER_KEY)
    for _ in range(2):  # each holds ~1,030 tokens (its body and the 1,024-token default)
        with streamer.chat.completions.create(
            model="xai.grok-4", messages=HELLO, stream=True
        ) as stream:
            next(iter(stream))
    time.sleep(0.5)  # the gateway sees the clients go
    with pytest.raises(openai.RateLimitError) as refused:
        streamer.chat.completions.create(model="xai.grok-4", messages=HELLO)
    assert refused.value.body["code"] == "insufficient_quota"


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer gm-ci-key-8b2",  # a prefix of a key
        "Bearer gm-ci-key-8b20-and-more",
        f"Bearer {CI_KEY.upper()}",
        "Bearer " + "x" * 60_000,
        "Basic " + CI_KEY,
    ],
    ids=["prefix", "extended", "case", "huge", "basic"],
)
def test_anything_but_a_key_gets_401(teams: Gateway, authorization: str) -> None:
    body = json.dumps({"model": "xai.grok-4", "messages": HELLO})
    connection = http.client.HTTPConnection("127.0.0.1", teams.port, timeout=10)
    connection.request(
        "POST",
        "/v1/chat/completions",
        body,
        {"Authorization": authorization, "Content-Type": "application/json"},
    )
    response = connection.getresponse()
    assert response.status == 401
    assert json.loads(response.read())["error"]["code"] == "invalid_api_key"


def test_an_unreachable_redis_leaves_limits_to_each_gateway_and_says_so(
    tmp_path: Path, chicago: Simulator
) -> None:
    url = f"redis://:s3cret-redis@127.0.0.1:{free_port()}/0"
    gateway = start_team_gateway(tmp_path, chicago, "--set", f"gomodel_redis_url={url}")
    try:
        ci = openai_client(gateway, CI_KEY)
        for _ in range(3):
            ci.chat.completions.create(model="xai.grok-4", messages=HELLO)
        with pytest.raises(openai.RateLimitError):
            ci.chat.completions.create(model="xai.grok-4", messages=HELLO)
        text = metrics(gateway)
    finally:
        gateway.stop()
    log = gateway.log()
    assert "cannot be reached" in log and "limits are enforced by this gateway alone" in log
    assert "s3cret-redis" not in log
    assert sample(text, "gomodel_limit_store_errors_total") >= 1
    assert sample(text, "gomodel_limits_shared", store="redis") == 0


# -- several gateways: one Redis, one ledger ------------------------------------------------------

USAGE = Path(__file__).resolve().parents[1] / "scripts" / "usage.py"


def usage_report(db: str, *args: str) -> list[dict]:
    done = subprocess.run(
        [sys.executable, str(USAGE), "--db", db, "--json", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(done.stdout)


def wait_for_rows(db: str, count: int) -> list[dict]:
    """The ledger writes in batches, about once a second."""
    deadline = time.monotonic() + 15
    while True:
        rows = usage_report(db, "--by", "key,provider,model")
        if sum(row["requests"] for row in rows) >= count or time.monotonic() > deadline:
            return rows
        time.sleep(0.3)


def test_two_gateways_share_one_rate_limit_through_redis(
    tmp_path: Path, chicago: Simulator, redis_server
) -> None:
    url = f"--set=gomodel_redis_url={redis_server.url}"
    flush(redis_server.url)
    first = start_team_gateway(tmp_path / "a", chicago, url)
    second = start_team_gateway(tmp_path / "b", chicago, url)
    try:
        clients = [openai_client(first, CI_KEY), openai_client(second, CI_KEY)]
        for call in range(3):  # alternating: each gateway alone would allow 3
            clients[call % 2].chat.completions.create(model="xai.grok-4", messages=HELLO)
        with pytest.raises(openai.RateLimitError) as refused:
            clients[1].chat.completions.create(model="xai.grok-4", messages=HELLO)
        text = metrics(second)
    finally:
        first.stop()
        second.stop()
    assert refused.value.body["code"] == "rate_limit_exceeded"
    assert sample(text, "gomodel_limits_shared", store="redis") == 1
    assert sample(text, "gomodel_limit_store_errors_total") == 0


def flush(redis_url: str) -> None:
    with redis.Redis.from_url(redis_url) as client:
        client.flushdb()


def test_two_gateways_write_one_postgresql_ledger(
    tmp_path: Path, chicago: Simulator, postgres_url: str
) -> None:
    db = f"--set=gomodel_usage_db={postgres_url}"
    first = start_team_gateway(tmp_path / "a", chicago, db)
    second = start_team_gateway(tmp_path / "b", chicago, db)
    try:
        openai_client(first, CI_KEY).chat.completions.create(model="xai.grok-4", messages=HELLO)
        list(
            openai_client(second, CI_KEY).responses.create(
                model="gpt-4o-mini", input="hi", stream=True
            )
        )
        with pytest.raises(openai.PermissionDeniedError):
            openai_client(second, CI_KEY).responses.create(model="openai.gpt-oss-120b", input="x")
        openai_client(second, MASTER_KEY).chat.completions.create(
            model="openai.gpt-oss-120b", messages=HELLO
        )
        rows = wait_for_rows(postgres_url, 3)
        text = metrics(second)
    finally:
        first.stop()
        second.stop()
    by = {(row["key"], row["provider"], row["model"]): row for row in rows}
    assert by[("ci", "oracle", "xai.grok-4")]["requests"] == 1
    assert by[("ci", "oracle", "openai.gpt-oss-120b")]["requests"] == 1  # through the alias
    assert ("ci", "gateway", "") not in by  # refusals are counted in metrics, not the ledger
    assert by[("master", "oracle", "openai.gpt-oss-120b")]["tokens_out"] > 0
    assert sum(row["requests"] for row in rows) == 3
    assert sample(text, "gomodel_ledger_rows", outcome="written") == 3  # 2 calls, 1 owner
    assert sample(text, "gomodel_ledger_rows", outcome="dropped") == 0


def test_the_sqlite_ledger_keeps_calls_across_a_restart_and_strangers_leave_no_row(
    tmp_path: Path, chicago: Simulator
) -> None:
    db = tmp_path / "usage.db"
    for run in ("a", "b"):
        gateway = start_team_gateway(tmp_path / run, chicago, f"--set=gomodel_usage_db={db}")
        try:
            openai_client(gateway, CI_KEY).chat.completions.create(
                model="xai.grok-4", messages=HELLO
            )
            with pytest.raises(openai.AuthenticationError):
                openai_client(gateway, "gm-ci-key-8b2").chat.completions.create(
                    model="xai.grok-4", messages=HELLO
                )
        finally:
            gateway.stop()  # flushes the ledger
    rows = usage_report(str(db))
    assert [(row["key"], row["requests"]) for row in rows] == [("ci", 2)]
    assert oct(db.stat().st_mode & 0o777) == "0o600"


HAPROXY_CFG = Path(__file__).resolve().parents[1] / "docs" / "several-gateways" / "haproxy.cfg"
LB_HOST = "gomodel.internal"


def haproxy_binary() -> str:
    """HAProxy's path; the test skips without it (before it starts anything to clean up)."""
    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    if not Path(haproxy).exists():
        pytest.skip("haproxy is not installed; run scripts/install-stores (as root)")
    return haproxy


def start_haproxy(haproxy: str, workdir: Path, gateways: list[Gateway]) -> tuple[Process, int]:
    """The README's HAProxy configuration, as shipped, in front of the gateways."""
    port = free_port()
    env = clean_env(
        GOMODEL_LISTEN=f"127.0.0.1:{port}",
        GOMODEL_HOST=LB_HOST,
        GOMODEL_1=f"127.0.0.1:{gateways[0].port}",
        GOMODEL_2=f"127.0.0.1:{gateways[1].port}",
    )
    process = spawn([haproxy, "-db", "-f", str(HAPROXY_CFG)], workdir / "haproxy.log", env)
    deadline = time.monotonic() + 15
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process, port
        except OSError:
            assert process.popen.poll() is None, process.text()
            assert time.monotonic() < deadline, "haproxy did not start"
            time.sleep(0.1)


def test_several_gateways_behind_haproxy_share_limits_and_one_ledger(
    tmp_path: Path, chicago: Simulator, redis_server, postgres_url: str
) -> None:
    haproxy = haproxy_binary()
    flush(redis_server.url)
    shared = (
        f"--set=gomodel_redis_url={redis_server.url}",
        f"--set=gomodel_usage_db={postgres_url}",
        f"--set=gomodel_hosts={LB_HOST}",
    )
    gateways = [start_team_gateway(tmp_path / name, chicago, *shared) for name in ("a", "b")]
    try:  # the gateways stopped whatever fails, HAProxy's start included
        balancer, port = start_haproxy(haproxy, tmp_path, gateways)
        try:
            statuses = []
            for _ in range(4):  # a connection each, so HAProxy spreads them over both gateways
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                body = json.dumps({"model": "xai.grok-4", "messages": HELLO})
                headers = {"Host": LB_HOST, "Authorization": f"Bearer {CI_KEY}"}
                connection.request("POST", "/v1/chat/completions", body, headers)
                statuses.append(connection.getresponse().status)
                connection.close()
            rows = wait_for_rows(postgres_url, 3)
            by_gateway = usage_report(postgres_url, "--by", "gateway")
        finally:
            balancer.stop()
    finally:
        for gateway in gateways:
            gateway.stop()
    assert statuses == [200, 200, 200, 429]  # one limit of 3 per minute for both
    assert sum(row["requests"] for row in rows) == 3  # the refusal is in metrics only
    assert len(by_gateway) == 2  # both gateways served and wrote rows


def test_a_key_holders_chunked_upload_is_cut_off_at_the_body_limit(teams: Gateway) -> None:
    """mitmproxy itself stops reading past gomodel_max_body_size (10 MiB) while the gateway is
    shared: 200 MB sent chunked by a key holder are never held."""
    rss_before = rss_kib(teams)
    chunk = b"x" * (1024 * 1024)

    def body():
        for _ in range(200):
            yield chunk

    connection = http.client.HTTPConnection("127.0.0.1", teams.port, timeout=30)
    status = None
    try:
        connection.request(
            "POST",
            "/v1/chat/completions",
            body(),
            {"Authorization": f"Bearer {CI_KEY}", "Content-Type": "application/json"},
            encode_chunked=True,
        )
        status = connection.getresponse().status
    except (ConnectionError, BrokenPipeError):
        pass  # cut off while sending: what matters is that nothing was held
    assert status in (None, 413)
    assert rss_kib(teams) - rss_before < 40 * 1024
    assert "body_size_limit=10485760" in teams.log()
