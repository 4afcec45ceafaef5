"""The ledger heals itself in AWS: settlements that the store refused (DynamoDB throttling on the
store's wire) are logged as `usage_event` lines; CloudWatch Logs hands those lines to the stack's
replay function (aws_lambda/ledger_replay.py) as its own subscription event, gzip and base64; the
ledger then matches the answers exactly, and a batch delivered twice records nothing twice."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from chatgw.aws_lambda import ledger_replay
from chatgw.errors import StoreUnavailable
from chatgw.store.base import UsageQuery
from tests.support.asgi import captured_logs
from tests.support.dynamo import Tables
from tests.support.dynamo_gateway import DynGateway
from tests.support.dynamo_gateway import steady as steady
from tests.support.faulty_proxy import THROTTLED, Fault, in_bursts, operation
from tests.support.lambda_events import cloudwatch_logs_event

REQUESTS = 13


@pytest.fixture
def replay_env(dynamo_tables: Tables, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The replay function's environment as the template sets it, its store straight on moto."""
    monkeypatch.setenv("CHATGW_KEYS_TABLE", dynamo_tables.keys)
    monkeypatch.setenv("CHATGW_USAGE_TABLE", dynamo_tables.usage)
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", dynamo_tables.endpoint)
    ledger_replay._store.cache_clear()
    yield
    ledger_replay._store().close()
    ledger_replay._store.cache_clear()


def ledger(dyn: DynGateway, kid: str, day: str) -> tuple[int, int, int]:
    """(requests, prompt, completion tokens) of the key's day, which its month must equal (the
    test's requests all fall in one day); the day and the month are separate writes."""
    rows = {
        period: [
            (r.requests, r.prompt_tokens, r.completion_tokens)
            for r in dyn.store.usage(UsageQuery(period, value, key_id=kid))
        ]
        for period, value in (("day", day), ("month", day[:7]))
    }
    assert rows["day"] == rows["month"], rows
    return rows["day"][0] if rows["day"] else (0, 0, 0)


def throttled_burst(dyn: DynGateway) -> tuple[str, list[dict[str, Any]], list[str]]:
    """13 answered requests while DynamoDB throttles settlement writes in bursts longer than the
    store's retries: some events fail whole, some after the event (a day total pending)."""
    key = dyn.key()
    answers = []
    events = Fault(operation("PutItem"), answer=THROTTLED, pattern=in_bursts(4, 8))
    days = Fault(operation("UpdateItem", containing=b'"D#'), answer=THROTTLED, pattern=in_bursts(4, 12))
    with captured_logs() as logs, dyn.proxy.injecting(events, days):
        for i in range(REQUESTS):
            reply = dyn.chat(key, stream=i % 3 == 0)
            assert reply.status == 200
            answers.append(reply)
    lines = [line for line in logs.lines if json.loads(line)["msg"] == "usage_event"]
    return key.split("_")[1], [a.__dict__ for a in answers], lines


def test_the_replay_function_heals_the_ledger_from_the_logged_lines(
    steady: DynGateway,
    replay_env: None,
) -> None:
    dyn = steady
    kid, _answers, lines = throttled_burst(dyn)
    events = [json.loads(line)["usage_event"] for line in lines]
    assert 0 < len(lines) < REQUESTS  # the burst hit some settlements, not all
    assert any(e.get("pending") for e in events)  # one failed after its event was stored
    day = events[0]["at"][:10]
    stored = dyn.store.usage_events(kid)
    assert len(stored) < REQUESTS or ledger(dyn, kid, day)[0] < REQUESTS  # the ledger is short
    # every answered request's true usage: those stored, and those only logged
    truth = {e.request_id: (e.prompt_tokens, e.completion_tokens) for e in stored}
    truth |= {e["request_id"]: (e["prompt_tokens"], e["completion_tokens"]) for e in events}
    assert len(truth) == REQUESTS
    expected = (REQUESTS, sum(p for p, _ in truth.values()), sum(c for _, c in truth.values()))
    delivery = cloudwatch_logs_event(["START RequestId: 1 Version: 7", *lines, "END RequestId: 1"])

    first = ledger_replay.handler(delivery)
    again = ledger_replay.handler(delivery)  # CloudWatch Logs or Lambda delivers the batch again
    assert first["recorded"] >= 1 and first["unreadable"] == 0
    assert again["recorded"] == 0
    assert ledger(dyn, kid, day) == expected
    assert sorted(e.request_id for e in dyn.store.usage_events(kid)) == sorted(truth)


def test_an_unreadable_line_is_skipped_and_the_rest_recorded(steady: DynGateway, replay_env: None) -> None:
    dyn = steady
    kid, _answers, lines = throttled_burst(dyn)
    broken = '{"msg": "usage_event", "usage_event": {"request_id": "cut short'
    with captured_logs() as logs:
        result = ledger_replay.handler(cloudwatch_logs_event([broken, *lines]))
    assert result["unreadable"] == 1 and result["recorded"] >= 1
    (skipped,) = logs.named("ledger_replay_unreadable")
    assert skipped["level"] == "ERROR" and "cut short" not in json.dumps(skipped)
    day = json.loads(lines[0])["usage_event"]["at"][:10]
    assert ledger(dyn, kid, day)[0] == REQUESTS


def test_a_store_failure_fails_the_invoke_and_the_retry_records_once(steady: DynGateway) -> None:
    """Lambda retries a failed asynchronous invoke with the same batch: the first try fails part
    way (the month items throttled past the retries, after the events and the days were written),
    the retries complete it, nothing counted twice."""
    dyn = steady
    kid, _answers, lines = throttled_burst(dyn)
    delivery = cloudwatch_logs_event(lines)
    months = Fault(operation("UpdateItem", containing=b'"M#'), answer=THROTTLED)
    with dyn.proxy.injecting(months), pytest.raises(StoreUnavailable):
        ledger_replay.handler(delivery, store=dyn.store)
    ledger_replay.handler(delivery, store=dyn.store)
    ledger_replay.handler(delivery, store=dyn.store)
    day = json.loads(lines[0])["usage_event"]["at"][:10]
    assert ledger(dyn, kid, day)[0] == REQUESTS
    assert len(dyn.store.usage_events(kid)) == REQUESTS


def test_the_control_message_records_nothing() -> None:
    import base64
    import gzip

    control = {"messageType": "CONTROL_MESSAGE", "logEvents": [{"id": "1", "message": "CWL CONTROL MESSAGE"}]}
    event = {"awslogs": {"data": base64.b64encode(gzip.compress(json.dumps(control).encode())).decode()}}
    assert ledger_replay.log_messages(event) == []
