"""A write-request-unit meter for tests: what DynamoDB would bill (on demand) for the writes a real
boto3 client actually sends, measured against moto.

It hooks the client's `before-send` (the request body on the wire, in DynamoDB's typed JSON) and
`after-call` events and reads the items each write touches, before and after, through a second
client that is not metered. Billing rules (DynamoDB developer guide, "Item sizes and formats" and
"Read/write capacity mode"):

- item size: attribute names (UTF-8 bytes) plus values: strings UTF-8 bytes; numbers 1 byte per two
  significant digits plus 1; binary bytes; booleans and null 1; sets the sum of their elements;
  lists and maps 3 bytes plus 1 per element plus the elements (map keys count as names);
- one write request unit per 1 KB of item, rounded up, at least 1;
- PutItem, UpdateItem, DeleteItem: the larger of the item before and after (a failed condition
  still bills the item as it is);
- TransactWriteItems: every action (Put, Update, Delete, ConditionCheck) twice;
- BatchWriteItem: each put or delete as a PutItem/DeleteItem.

The before-image is read when the request leaves, the after-image when its answer is back: writes
sent at once must touch different items (as the store's settlement does), or they mix.
"""

from __future__ import annotations

import base64
import json
import math
import threading
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

KB = 1024
WRITES = {"PutItem", "UpdateItem", "DeleteItem", "TransactWriteItems", "BatchWriteItem"}


def value_size(value: dict[str, Any]) -> int:
    ((kind, v),) = value.items()
    if kind == "S":
        return len(v.encode())
    if kind == "N":
        return number_size(v)
    if kind == "B":
        return len(base64.b64decode(v)) if isinstance(v, str) else len(v)
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "SS":
        return sum(len(s.encode()) for s in v)
    if kind == "NS":
        return sum(number_size(n) for n in v)
    if kind == "BS":
        return sum(len(base64.b64decode(b)) for b in v)
    if kind == "L":
        return 3 + sum(1 + value_size(e) for e in v)
    if kind == "M":
        return 3 + sum(1 + len(k.encode()) + value_size(e) for k, e in v.items())
    raise ValueError(f"unknown DynamoDB type {kind}")


def number_size(text: str) -> int:
    digits = Decimal(text).normalize().as_tuple().digits
    significant = len(digits) if any(digits) else 1
    return math.ceil(significant / 2) + 1


def item_size(item: dict[str, Any] | None) -> int:
    if not item:
        return 0
    return sum(len(name.encode()) + value_size(value) for name, value in item.items())


def units(size: int) -> int:
    return max(1, math.ceil(size / KB))


@dataclass
class Write:
    op: str
    table: str
    key: dict[str, Any]
    new_item: dict[str, Any] | None = None
    """For a put: the item sent (the after-image if the condition held)."""
    factor: int = 1
    before: dict[str, Any] | None = None


@dataclass
class WriteMeter:
    """Attach to a boto3 DynamoDB client; `reader` is a second client on the same endpoint."""

    client: Any
    reader: Any
    key_names: tuple[str, str] = ("pk", "sk")
    billed: list[tuple[str, int]] = field(default_factory=list)
    """(operation, write request units), one entry per request sent."""
    per_item: Counter[tuple[str, str]] = field(default_factory=Counter)
    """Writes per (pk, sk) item: the hot-item count."""
    _local: threading.local = field(default_factory=threading.local)
    """The request in flight, per thread (the store sends some writes at once from two threads)."""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.client.meta.events.register("before-send.dynamodb", self._before)
        self.client.meta.events.register("after-call.dynamodb", self._after)

    def take(self) -> list[tuple[str, int]]:
        billed, self.billed = self.billed, []
        return billed

    def total(self) -> int:
        return sum(u for _, u in self.billed)

    # hooks ---------------------------------------------------------------------------------

    def _before(self, request: Any, **_: Any) -> None:
        op = request.headers["X-Amz-Target"].decode().rpartition(".")[2]
        self._local.op, self._local.pending = op, []
        if op not in WRITES:
            return
        body = json.loads(request.body)
        for write in self._writes(op, body):
            write.before = self._read(write.table, write.key)
            self._local.pending.append(write)

    def _after(self, model: Any, **_: Any) -> None:
        op = getattr(self._local, "op", "")
        if op not in WRITES or model.name != op:
            return
        total = 0
        for write in self._local.pending:
            after = self._read(write.table, write.key)
            size = max(item_size(write.before), item_size(after))
            total += units(size) * write.factor
            with self._lock:
                self.per_item[(write.key[self.key_names[0]]["S"], write.key[self.key_names[1]]["S"])] += 1
        with self._lock:
            self.billed.append((op, total))
        self._local.pending = []

    # what a request writes -------------------------------------------------------------------

    def _key_of(self, item: dict[str, Any]) -> dict[str, Any]:
        return {name: item[name] for name in self.key_names}

    def _writes(self, op: str, body: dict[str, Any]) -> list[Write]:
        if op == "PutItem":
            return [Write(op, body["TableName"], self._key_of(body["Item"]), body["Item"])]
        if op in ("UpdateItem", "DeleteItem"):
            return [Write(op, body["TableName"], body["Key"])]
        if op == "TransactWriteItems":
            out = []
            for action in body["TransactItems"]:
                ((kind, spec),) = action.items()
                key = spec["Key"] if "Key" in spec else self._key_of(spec["Item"])
                out.append(Write(kind, spec["TableName"], key, spec.get("Item"), factor=2))
            return out
        out = []
        for table, requests in body["RequestItems"].items():  # BatchWriteItem
            for request in requests:
                if "PutRequest" in request:
                    item = request["PutRequest"]["Item"]
                    out.append(Write("PutItem", table, self._key_of(item), item))
                else:
                    out.append(Write("DeleteItem", table, request["DeleteRequest"]["Key"]))
        return out

    def _read(self, table: str, key: dict[str, Any]) -> dict[str, Any] | None:
        item: dict[str, Any] | None = self.reader.get_item(TableName=table, Key=key, ConsistentRead=True).get("Item")
        return item
