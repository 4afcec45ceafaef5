"""Fixtures for DynamoDB tests: a moto server on loopback (one per session) and fresh tables per test."""

from __future__ import annotations

import os
import threading
import uuid
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

# Never reach a real AWS account from the tests.
for _name, _value in {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}.items():
    os.environ[_name] = _value
os.environ.pop("AWS_PROFILE", None)


class _OneAtATime:
    """moto applies a conditional write as read-check-write in Python without a lock, so two
    server threads can interleave; DynamoDB serializes writes to one item. Serializing the
    server's requests gives the tests DynamoDB's guarantee, not a weaker one."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.lock = threading.Lock()
        self.operations: Counter[str] = Counter()
        """Requests served, by DynamoDB operation (X-Amz-Target): the round trips tests measure."""

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        with self.lock:
            self.operations[str(environ.get("HTTP_X_AMZ_TARGET", "")).rpartition(".")[2]] += 1
            return list(self.app(environ, start_response))


@dataclass
class MotoServer:
    endpoint: str
    port: int
    operations: Counter[str]

    def take(self) -> Counter[str]:
        """The operations served since the last call."""
        taken = Counter(self.operations)
        self.operations.clear()
        return taken


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    app = _OneAtATime(DomainDispatcherApplication(create_backend_app))
    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=MotoRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    port = int(server.server_address[1])
    try:
        yield MotoServer(endpoint=f"http://127.0.0.1:{port}", port=port, operations=app.operations)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@dataclass
class Tables:
    endpoint: str
    keys: str
    usage: str


@pytest.fixture
def dynamo_tables(moto_server: MotoServer) -> Tables:
    from chatgw.store.dynamodb.tables import create_tables, make_client

    suffix = uuid.uuid4().hex[:10]
    tables = Tables(moto_server.endpoint, f"chatgw-keys-{suffix}", f"chatgw-usage-{suffix}")
    client = make_client(endpoint_url=moto_server.endpoint, region="us-east-1")
    create_tables(client, tables.keys, tables.usage)
    client.close()
    return tables
