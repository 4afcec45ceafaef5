"""Every way a request ends settles its reservation, on both stores: a complete answer, a stream the
client left, a backend failure, a fallback; and a settlement the store missed is logged whole and
settled exactly once by `chatgw replay`.

The key's budget holds one reservation and a little more, but not two: the second request is
admitted only if the first one's reservation was replaced by its (smaller) actual tokens."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from chatgw.access.keys import Limits, new_key
from chatgw.catalog import Catalog, ModelEntry
from chatgw.cli import main as chatgw_cli
from chatgw.compose import Container, build
from chatgw.errors import UpstreamError
from chatgw.metering.estimate import estimate_prompt_tokens
from tests.fakes.backends import ScriptedBackend
from tests.support.asgi import CHAT, captured_logs, run
from tests.support.conversations import conversation_of
from tests.support.failing_store import failing_table

USER = [{"role": "user", "content": "hi"}]
RESERVE = estimate_prompt_tokens(conversation_of({"model": "m", "messages": USER})) + 20  # prompt + max_tokens
BUDGET = 2 * RESERVE - 1


def body(model: str, stream: bool) -> bytes:
    return json.dumps({"model": model, "messages": USER, "stream": stream, "max_tokens": 20}).encode()


def headers(key: str) -> list[tuple[bytes, bytes]]:
    return [(b"x-api-key", key.encode()), (b"content-type", b"application/json")]


@pytest.fixture(params=["sqlite", "dynamodb"])
def gateway(request: pytest.FixtureRequest, make_container: Callable[..., Container]) -> Iterator[Container]:
    words = [" w"] * 6
    backends: dict[str, Any] = {
        "ok": ScriptedBackend(["a", " b", " c"]),
        "slow": ScriptedBackend(words, delay_s=0.05),
        "down": ScriptedBackend(fail=UpstreamError("upstream said 500")),
    }
    container = make_container()
    entries = {e.name: e for e in container.catalog.entries()}
    for name, backend in backends.items():
        entries[name] = ModelEntry(name, backend, f"fake {name}")
    entries["primary"] = ModelEntry("primary", backends["down"], "falls back", fallbacks=("ok",))
    catalog = Catalog(entries)
    if request.param == "sqlite":
        yield build(container.settings, store=container.store, catalog=catalog)
        return
    from chatgw.store.dynamodb.store import DynamoStore
    from chatgw.store.dynamodb.tables import make_client

    tables = request.getfixturevalue("dynamo_tables")
    store = DynamoStore(make_client(endpoint_url=tables.endpoint, region="us-east-1"), tables.keys, tables.usage)
    yield build(container.settings, store=store, catalog=catalog)
    store.close()


def limited_key(gateway: Container) -> tuple[str, str]:
    key, record = new_key("settle", pepper=gateway.settings.pepper, limits=Limits(monthly_token_budget=BUDGET))
    gateway.store.create_key(record)
    return key, record.key_id


@pytest.mark.parametrize(
    ("model", "stream", "leave", "status"),
    [
        ("ok", False, None, "ok"),
        ("ok", True, None, "ok"),
        ("slow", True, 2, "client_closed"),
        ("down", False, None, "error"),
        ("down", True, None, "error"),
        ("primary", False, None, "ok"),
    ],
    ids=["buffered", "streamed", "stream-left", "failed", "failed-stream", "fallback"],
)
def test_every_ending_settles_the_reservation(
    gateway: Container, model: str, stream: bool, leave: int | None, status: str
) -> None:
    key, key_id = limited_key(gateway)
    run(gateway.app, "POST", CHAT, headers(key), body(model, stream), leave_after_chunks=leave)
    (event,) = _eventually_events(gateway, key_id, 1)
    assert (event.status, event.reserved_tokens) == (status, RESERVE)
    assert event.total_tokens < RESERVE
    second = run(gateway.app, "POST", CHAT, headers(key), body("ok", False))
    assert second.status == 200, second.body  # refused if the first reservation were still held


def test_a_missed_settlement_is_logged_and_replayed_exactly_once(
    make_container: Callable[..., Container], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gateway = make_container({"ok": ScriptedBackend(["a", " b", " c"])})
    key, key_id = limited_key(gateway)
    with captured_logs() as logs, failing_table(gateway, "events"):
        first = run(gateway.app, "POST", CHAT, headers(key), body("ok", False))
    assert first.status == 200
    (line,) = logs.named("usage_event")
    assert line["usage_event"]["reserved_tokens"] == RESERVE
    held = run(gateway.app, "POST", CHAT, headers(key), body("ok", False))
    assert held.status == 429  # the reservation is still held: the error is on the refusing side

    log = tmp_path / "gateway.log"
    log.write_text(json.dumps({"msg": "usage_event", **line}) + "\n")
    state = ["--state-dir", str(gateway.settings.state_dir)]
    for expected in ({"recorded": 1, "already_recorded": 0}, {"recorded": 0, "already_recorded": 1}):
        assert chatgw_cli.main(["replay", str(log), "--json", *state]) == 0
        assert json.loads(capsys.readouterr().out) == expected
    assert [e.request_id for e in gateway.store.usage_events(key_id)] == [first.request_id]
    # Another container (this one remembers its refusal until the minute ends, by design).
    other = build(gateway.settings, store=gateway.store, catalog=gateway.catalog)
    settled = run(other.app, "POST", CHAT, headers(key), body("ok", False))
    assert settled.status == 200, settled.body


def _eventually_events(gateway: Container, key_id: str, count: int) -> list[Any]:
    from tests.support.polling import eventually

    def events() -> list[Any]:
        found = gateway.store.usage_events(key_id)
        return found if len(found) >= count else []

    return list(eventually(events))
