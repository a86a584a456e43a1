"""Token budgets against what Oracle really processes, through a real mitmdump: content stored
in conversations counts, background runs are settled when seen finished, a budget refuses
what it cannot cover, a spent budget still lets a key stop its runs, and no number in a body
knocks a gateway off its shared Redis limits."""

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from conftest import openai_client, two_region_env
from processes import Gateway, Simulator, start_gateway
from test_stored_resources import MODEL, POLL_SECONDS, RESOURCES_YAML
from test_teams import HELLO, MASTER_KEY, flush, metrics, sample

ITEMS_KEY = "gm-items-key-6a1f"
BACKGROUND_KEY = "gm-background-key-0c9e"
SPENT_KEY = "gm-spent-key-77d2"
RATED_KEY = "gm-rated-key-3be8"
CHAIN_KEY = "gm-chain-key-5d40"
PROBE_KEY = "gm-probe-key-91ab"
READER_KEY = "gm-reader-key-4c2e"
BUDGETS_YAML = f"""
server:
  master_keys: ["{MASTER_KEY}"]
  keys:
    items: {{key: {ITEMS_KEY}, tokens_per_day: 3000}}
    background: {{key: {BACKGROUND_KEY}, tokens_per_day: 6000}}
    spent: {{key: {SPENT_KEY}, tokens_per_day: 10, requests_per_minute: 20}}
    rated: {{key: {RATED_KEY}, requests_per_minute: 5, tokens_per_day: 1000000}}
    chain: {{key: {CHAIN_KEY}, tokens_per_day: 3000}}
    probe: {{key: {PROBE_KEY}, tokens_per_day: 3000}}
    reader: {{key: {READER_KEY}, tokens_per_day: 100000}}
"""
WORDS = "word " * 1600  # 8,000 bytes: about 2,000 tokens at 4 bytes a token


def start_budget_gateway(workdir: Path, simulators, shared_ca: Path, *options: str) -> Gateway:
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "gomodel.yaml"
    config.write_text(BUDGETS_YAML + RESOURCES_YAML)
    env = two_region_env(simulators)
    return start_gateway(
        workdir / "gw", env, "--set", f"gomodel_config={config}", *options, ca=shared_ca
    )


@pytest.fixture(scope="module")
def ledger_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("budgets-ledger") / "usage.db"


@pytest.fixture(scope="module")
def budgets(
    tmp_path_factory: pytest.TempPathFactory, simulators, shared_ca: Path, ledger_path: Path
) -> Iterator[Gateway]:
    workdir = tmp_path_factory.mktemp("budgets")
    gateway = start_budget_gateway(
        workdir, simulators, shared_ca, "--set", f"gomodel_usage_db={ledger_path}"
    )
    yield gateway
    gateway.stop()


def test_content_stored_in_a_conversation_counts_and_a_budget_refuses_what_it_cannot_cover(
    budgets: Gateway, chicago: Simulator
) -> None:
    """8,000 bytes of items are about 2,000 tokens of a 3,000-token budget; the same again does
    not fit in what is left, nor does a background response making Oracle read them."""
    items = openai_client(budgets, ITEMS_KEY)
    conversation = items.conversations.create()
    message = [{"type": "message", "role": "user", "content": WORDS}]
    items.conversations.items.create(conversation.id, items=message)
    received = len(chicago.requests())

    with pytest.raises(openai.RateLimitError) as again:
        items.conversations.items.create(conversation.id, items=message)
    with pytest.raises(openai.RateLimitError) as continued:
        items.responses.create(
            model=MODEL, input="go on", conversation=conversation.id, background=True
        )

    for refused in (again, continued):
        assert refused.value.body["code"] == "insufficient_quota"
        assert "needs about 20" in refused.value.message  # about 2,000 tokens
    assert len(chicago.requests()) == received  # neither reached Oracle
    assert items.conversations.items.list(conversation.id).data  # reading is no spending


def test_a_call_continuing_a_response_is_charged_the_context_oracle_reads_again(
    budgets: Gateway, chicago: Simulator
) -> None:
    """The first response's usage (about 1,600 input tokens) is what a call continuing it makes
    Oracle read again: with about 1,400 of 3,000 left, that call does not fit, however small."""
    client = openai_client(budgets, CHAIN_KEY)
    first = client.responses.create(model=MODEL, input=WORDS)
    assert first.usage is not None and first.usage.input_tokens >= 1600
    received = len(chicago.requests())

    with pytest.raises(openai.RateLimitError) as refused:
        client.responses.create(model=MODEL, input="and?", previous_response_id=first.id)

    assert refused.value.body["code"] == "insufficient_quota"
    assert f"needs about {first.usage.input_tokens + first.usage.output_tokens}" in (
        refused.value.message
    )
    assert len(chicago.requests()) == received
    assert client.responses.create(model=MODEL, input="a fresh start").output_text


def ledger_rows(path: Path, key: str, count: int) -> list[tuple]:
    """The ledger writes in batches, about once a second."""
    deadline = time.monotonic() + 15
    while True:
        rows = []
        if path.exists():
            with sqlite3.connect(path) as db:
                rows = db.execute(
                    "SELECT endpoint, model, status, tokens_in, tokens_out FROM gomodel_usage "
                    'WHERE "key" = ? ORDER BY "time"',
                    (key,),
                ).fetchall()
        if len(rows) >= count or time.monotonic() > deadline:
            return rows
        time.sleep(0.3)


def test_a_background_run_is_settled_with_its_usage_when_a_poll_sees_it_completed(
    budgets: Gateway, chicago: Simulator, ledger_path: Path
) -> None:
    """A run holds its estimate (5,000 output tokens of a 6,000 budget) until a poll sees it
    completed: then Oracle's usage replaces it, and the poll's ledger row carries it once."""
    client = openai_client(budgets, BACKGROUND_KEY)
    run = client.responses.create(
        model=MODEL, input="take your time", background=True, max_output_tokens=5000
    )
    with pytest.raises(openai.RateLimitError) as held:  # 5,000 more cannot fit while it runs
        client.responses.create(model=MODEL, input="more", max_output_tokens=5000)
    assert held.value.body["code"] == "insufficient_quota"

    status, deadline = run.status, time.monotonic() + POLL_SECONDS
    while status in ("queued", "in_progress") and time.monotonic() < deadline:
        time.sleep(0.1)
        status = client.responses.retrieve(run.id).status
    usage = client.responses.retrieve(run.id).usage  # read again: no new use
    assert status == "completed" and usage is not None

    client.responses.create(model=MODEL, input="more", max_output_tokens=5000)  # room again
    rows = ledger_rows(ledger_path, "background", 5)
    assert rows[0][:2] == ("responses", "xai.grok-4") and rows[0][3:] == (None, None)
    polls = [row for row in rows if row[0] == "responses/{id}"]
    settled = [row for row in polls if row[3] is not None]
    assert settled == [
        ("responses/{id}", "xai.grok-4", 200, usage.input_tokens, usage.output_tokens)
    ]
    assert len(polls) >= 2  # the later reads carry no tokens


def test_a_spent_budget_still_lets_a_key_look_at_cancel_and_delete_its_runs(
    budgets: Gateway, chicago: Simulator
) -> None:
    chicago.configure(background_seconds=30)
    client = openai_client(budgets, SPENT_KEY)
    run = client.responses.create(model=MODEL, input="a long job", background=True)
    with pytest.raises(openai.RateLimitError) as refused:  # its estimate spent the budget
        client.responses.create(model=MODEL, input="another")
    assert refused.value.body["code"] == "insufficient_quota"

    assert client.responses.retrieve(run.id).status in ("queued", "in_progress")
    assert client.responses.cancel(run.id).status == "cancelled"
    assert client.delete(f"/responses/{run.id}", cast_to=dict)["deleted"]


def test_an_absurd_output_limit_is_a_400_and_the_limits_stay_shared(
    tmp_path: Path, simulators, shared_ca: Path, chicago: Simulator, redis_server
) -> None:
    """max_tokens 10**30 once made Redis's INCRBY fail, which the gateway took for Redis being
    down: 5 s of local counters. Now it is refused as OpenAI refuses it, and nothing leaves
    Redis."""
    flush(redis_server.url)
    gateway = start_budget_gateway(
        tmp_path, simulators, shared_ca, "--set", f"gomodel_redis_url={redis_server.url}"
    )
    try:
        client = openai_client(gateway, RATED_KEY)
        with pytest.raises(openai.BadRequestError) as refused:
            client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=10**30)
        statuses = []
        for _ in range(6):
            try:
                client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=20)
                statuses.append(200)
            except openai.RateLimitError:
                statuses.append(429)
        text = metrics(gateway)
    finally:
        gateway.stop()
    assert refused.value.body["code"] == "integer_above_max_value"
    assert refused.value.body["param"] == "max_tokens"
    assert statuses == [200] * 5 + [429]
    assert sample(text, "gomodel_limits_shared", store="redis") == 1
    assert sample(text, "gomodel_limit_store_errors_total") == 0
    assert "cannot be reached" not in gateway.log()


def test_a_call_refused_for_another_keys_id_gives_its_reservation_back(budgets: Gateway) -> None:
    """Stored ids are checked after admission (a key past its limits costs no ledger lookup);
    a call refused there used nothing, so its reserved tokens return to the budget."""
    theirs = openai_client(budgets, MASTER_KEY).responses.create(model=MODEL, input="hi")
    probe = openai_client(budgets, PROBE_KEY)
    for _ in range(3):  # each would reserve about 2,500 tokens of 3,000
        with pytest.raises(openai.NotFoundError):
            probe.responses.create(
                model=MODEL, input="hi", previous_response_id=theirs.id, max_output_tokens=2500
            )
    answer = probe.responses.create(model=MODEL, input="hi", max_output_tokens=2900)
    assert answer.id


def test_reading_a_stored_response_again_counts_no_tokens_in_the_metrics(budgets: Gateway) -> None:
    """The tokens a stored response's usage names were counted when it was made."""
    reader = openai_client(budgets, READER_KEY)
    made = reader.responses.create(model=MODEL, input="hi")
    before = sample(metrics(budgets), "gomodel_key_tokens_total", key="reader", direction="input")
    for _ in range(3):
        assert reader.responses.retrieve(made.id).usage is not None
    after = sample(metrics(budgets), "gomodel_key_tokens_total", key="reader", direction="input")
    assert before == made.usage.input_tokens and after == before
