"""What environments restored from one SnapStart snapshot must not share, proved the way a snapshot
makes them: the streaming runtime (real app, DynamoDB store on moto) is forked at `restore/next` into
two copies (tests/support/snapfork.py) that each finish the restore and serve requests."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from chatgw.access.keys import new_key
from chatgw.aws_lambda.fake_runtime_api import FakeInvocation, FakeRuntimeAPI
from chatgw.store.dynamodb.store import DynamoStore
from chatgw.store.dynamodb.tables import make_client
from tests.support.dynamo import MotoServer, Tables
from tests.support.lambda_events import rest_v1_event

ROOT = Path(__file__).resolve().parents[2]
COPIES, INVOCATIONS = 2, 2


@dataclass
class Connection:
    requests_by_phase: dict[str, int] = field(default_factory=dict)


class Relay:
    """An HTTP/1.1 keep-alive proxy on loopback in front of moto (which closes its connections after
    each answer), counting the requests of each client connection before and after the snapshot
    point (`phase`): a client that pools connections keeps using the one it has."""

    def __init__(self, port: int) -> None:
        self.phase = "before snapshot"
        self.connections: list[Connection] = []
        relay = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def setup(self) -> None:
                super().setup()
                self.counted = Connection()
                relay.connections.append(self.counted)

            def do_POST(self) -> None:
                counts = self.counted.requests_by_phase
                counts[relay.phase] = counts.get(relay.phase, 0) + 1
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                upstream = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection", "host")}
                    upstream.request("POST", self.path, body=body, headers=headers)
                    answer = upstream.getresponse()
                    data = answer.read()
                    self.send_response(answer.status)
                    for name, value in answer.getheaders():
                        if name.lower() not in ("connection", "content-length", "transfer-encoding", "date", "server"):
                            self.send_header(name, value)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                finally:
                    upstream.close()

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def relay(moto_server: MotoServer) -> Iterator[Relay]:
    relay = Relay(moto_server.port)
    yield relay
    relay.close()


def wait_until(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "timed out waiting"
        time.sleep(0.01)


def chat_event(key: str) -> dict[str, object]:
    body = {"model": "echo", "messages": [{"role": "user", "content": "hello there"}]}
    return rest_v1_event("POST", "/v2/llms/chat/completions", body, headers={"x-api-key": key})


@pytest.mark.slow
def test_copies_restored_from_one_snapshot_share_no_ids_randomness_or_sockets(
    dynamo_tables: Tables, relay: Relay, tmp_path: Path
) -> None:
    client = make_client(endpoint_url=dynamo_tables.endpoint, region="us-east-1")
    key, record = new_key("snapfork")
    DynamoStore(client, dynamo_tables.keys, dynamo_tables.usage).create_key(record)
    client.close()

    log_path = tmp_path / "runtime.log"
    with FakeRuntimeAPI(snap_start=True, hold_restore=True) as fake, log_path.open("wb") as log:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CHATGW_", "AWS_LAMBDA", "PYTEST"))}
        env.update(
            AWS_LAMBDA_RUNTIME_API=fake.address,
            AWS_LAMBDA_INITIALIZATION_TYPE="snap-start",
            AWS_ENDPOINT_URL_DYNAMODB=relay.endpoint,
            CHATGW_KEYS_TABLE=dynamo_tables.keys,
            CHATGW_USAGE_TABLE=dynamo_tables.usage,
            CHATGW_LOG_LEVEL="INFO",
            PYTHONPATH=os.pathsep.join(
                [str(ROOT / "handler"), str(ROOT)]
            ),  # this checkout's chatgw, not an installed one
        )
        command = [sys.executable, "-m", "tests.support.snapfork", str(COPIES), str(INVOCATIONS)]
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=log)
        try:
            wait_until(lambda: "GET restore/next" in fake.calls)
            # The snapshot is being taken: the pool holds the connection of the read at init.
            assert len(relay.connections) == 1 and relay.connections[0].requests_by_phase == {"before snapshot": 1}
            relay.phase = "after restore"
            invocations: list[FakeInvocation] = [fake.push(chat_event(key)) for _ in range(COPIES * INVOCATIONS)]
            fake.restored.set()
            for invocation in invocations:
                assert invocation.wait(60), log_path.read_text()
            assert process.wait(60) == 0, log_path.read_text()
        finally:
            process.kill()
            process.wait(10)

    assert all(i.succeeded for i in invocations), log_path.read_text()
    answers = [(i.prelude["headers"], json.loads(i.body)) for i in invocations if i.prelude is not None]
    by_pid: dict[str, list[tuple[dict[str, str], dict[str, object]]]] = {}
    for headers, body in answers:
        by_pid.setdefault(headers["x-probe-pid"], []).append((headers, body))

    # Two copies answered, two requests each, and neither is the snapshotted process.
    assert sorted(len(v) for v in by_pid.values()) == [INVOCATIONS] * COPIES
    assert str(process.pid) not in by_pid
    # Request ids and completion ids: all different.
    assert len({h["x-request-id"] for h, _ in answers}) == len({b["id"] for _, b in answers}) == len(answers)
    # Each copy has its own container id in the logs, and it is not the snapshot's.
    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
    (snapshot_container,) = {line["container"] for line in lines if line["msg"] == "snapshot"}
    containers = {pid: {h["x-probe-container"] for h, _ in v} for pid, v in by_pid.items()}
    assert all(len(ids) == 1 for ids in containers.values())
    assert len(set.union(*containers.values())) == COPIES
    assert snapshot_container not in set.union(*containers.values())
    restored = [line for line in lines if line["msg"] == "restored"]
    assert len(restored) == COPIES and {line["restored_from"] for line in restored} == {snapshot_container}
    # The random streams differ (each copy reseeded; without it both would draw the same numbers).
    draws = {pid: {d for h, _ in v for d in h["x-probe-random"].split(",")} for pid, v in by_pid.items()}
    first, second = draws.values()
    assert not first & second
    # No copy sent a byte on the connection pooled before the snapshot; each made its own.
    init_connection, *later = relay.connections
    assert init_connection.requests_by_phase == {"before snapshot": 1}
    assert len(later) >= COPIES and all(set(c.requests_by_phase) == {"after restore"} for c in later)
