"""A gateway on the DynamoDB store with a scripted model, for faults put between the two."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import pytest

from chatgw.access.keys import new_key
from chatgw.catalog import Catalog, ModelEntry
from chatgw.compose import Container, build
from chatgw.settings import Settings
from chatgw.store.dynamodb.store import DynamoStore
from chatgw.store.dynamodb.tables import make_client
from tests.fakes.backends import ScriptedBackend
from tests.support.asgi import CHAT, run
from tests.support.dynamo import Tables
from tests.support.faulty_proxy import FaultyProxy, faulty_proxy


@dataclass
class DynGateway:
    container: Container
    store: DynamoStore
    backend: ScriptedBackend
    proxy: FaultyProxy

    def key(self, **fields: Any) -> str:
        key, record = new_key("dyn", **fields)
        self.store.create_key(record)
        return key

    def chat(self, key: str, stream: bool = False) -> Any:
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": stream}
        headers = [(b"x-api-key", key.encode()), (b"content-type", b"application/json")]
        return run(self.container.app, "POST", CHAT, headers, json.dumps(body).encode())


def gateway_on(store: DynamoStore, settings: Settings, backend: ScriptedBackend) -> Container:
    catalog = Catalog({"m": ModelEntry("m", backend, "scripted")})
    return build(replace(settings, key_cache_seconds=0), store=store, catalog=catalog)


@pytest.fixture
def steady(dynamo_tables: Tables, settings: Settings) -> Iterator[DynGateway]:
    """As `dyn`, with timeouts a loaded machine cannot reach: these tests tell a refused write (it
    was not applied) from an unsure one (a timeout), so a slow answer must not look like a fault."""
    with faulty_proxy(dynamo_tables.endpoint) as proxy:
        client = make_client(endpoint_url=proxy.endpoint, region="us-east-1", connect_timeout=30, read_timeout=30)
        store = DynamoStore(client, dynamo_tables.keys, dynamo_tables.usage)
        backend = ScriptedBackend(["a", " b", " c"])
        yield DynGateway(gateway_on(store, settings, backend), store, backend, proxy)
        store.close()
