"""Changing a key's shard count N mid-month keeps the limits exact (docs/store.md,
"Changing N"): the old layout's items are sealed, their committed totals and live minute carried to
the new layout's items within its shares, then the key record gets the new N and epoch. Containers
still on the old key record re-admit on the new layout when they meet a sealed item. Never
over-admission, at any step of the change, from any container; reports still sum exactly."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from chatgw.access.keys import KeyRecord, Limits, new_key
from chatgw.access.limits import LEASE_SECONDS, generation_of, month_of
from chatgw.errors import StoreUnavailable
from chatgw.store import UsageEvent, UsageQuery, deadline
from chatgw.store.dynamodb.reshard import ReshardConflict, _seal, months_of_change, reshard
from chatgw.store.dynamodb.shards import READY_WAITS, Layout, Layouts, share, spread
from chatgw.store.dynamodb.store import DynamoStore
from chatgw.store.dynamodb.tables import make_client
from tests.support.dynamo import Tables
from tests.support.write_units import WriteMeter

BASE = datetime.now(UTC).replace(day=10, hour=12, minute=0, second=0, microsecond=0)
MONTH = f"{BASE:%Y-%m}"


@dataclass
class World:
    """An admin store and as many gateway "containers" (stores with their own memory) as asked."""

    tables: Tables
    made: list[DynamoStore] = field(default_factory=list)
    waits: list[float] = field(default_factory=list)

    def container(self) -> DynamoStore:
        client = make_client(endpoint_url=self.tables.endpoint, region="us-east-1")
        # no real pause while a change prepares its items: the waits are recorded instead
        store = DynamoStore(client, self.tables.keys, self.tables.usage, layouts=Layouts(sleep=self.waits.append))
        self.made.append(store)
        return store

    def item(self, key_id: str, sk: str) -> dict[str, Any]:
        return dict(
            self.made[0]
            .client.get_item(
                TableName=self.tables.usage, Key={"pk": {"S": f"KEY#{key_id}"}, "sk": {"S": sk}}, ConsistentRead=True
            )
            .get("Item", {})
        )

    def month_items(self, key_id: str, month: str = MONTH) -> dict[str, dict[str, Any]]:
        items = self.made[0].client.query(
            TableName=self.tables.usage,
            KeyConditionExpression="pk = :pk AND begins_with(sk, :sk)",
            ExpressionAttributeValues={":pk": {"S": f"KEY#{key_id}"}, ":sk": {"S": f"M#{month}"}},
            ConsistentRead=True,
        )["Items"]
        return {i["sk"]["S"]: i for i in items}


@pytest.fixture
def world(dynamo_tables: Tables) -> Iterator[World]:
    made = World(dynamo_tables)
    made.container()  # the admin's
    yield made
    for store in made.made:
        store.close()


def _key(world: World, **limits: int) -> KeyRecord:
    _, record = new_key("hot", limits=Limits(**limits), now=BASE)
    world.made[0].create_key(record)
    return record


def _event(key_id: str, rid: str, tokens: int, reserved: int, at: datetime = BASE, model: str = "m") -> UsageEvent:
    return UsageEvent(key_id, rid, at, model, "echo", tokens, 0, "ok", False, 3, reserved_tokens=reserved)


def _admit(store: DynamoStore, key: KeyRecord, limits: Limits, at: datetime, reserve: int) -> str | None:
    """The request id if admitted (on `limits`: the key record this container holds); None if refused
    or answered 503 (the change still preparing the new items)."""
    rid = uuid.uuid4().hex
    try:
        return rid if store.admit(key.key_id, limits, at, request_id=rid, reserve=reserve).admitted else None
    except StoreUnavailable:
        return None


def _change(world: World, record: KeyRecord, shards: int, at: datetime, **limits: int) -> KeyRecord:
    updated = record.with_changes(limits=replace(record.limits, shards=shards, **limits))
    return world.made[0].reshard(record, updated, at)


# the carry arithmetic ---------------------------------------------------------------------------


def test_a_carried_count_is_spread_within_the_new_shares() -> None:
    for limit in (1, 7, 10, 1000, 1001):
        for shards in (1, 2, 3, 4, 16):
            for total in range(0, limit + 3):
                parts = spread(total, limit, shards)
                assert sum(parts) == total
                if total <= limit:  # each part within its share: the room left adds up to limit - total
                    assert all(0 <= p <= (share(limit, shards, s) or 0) for s, p in enumerate(parts))
                    room = [(share(limit, shards, s) or 0) - p for s, p in enumerate(parts)]
                    assert sum(room) == limit - total and max(room) - min(room) <= 1
    assert spread(10, None, 4) == [3, 3, 2, 2]


def test_the_change_covers_this_month_and_the_months_either_side() -> None:
    assert months_of_change(datetime(2026, 12, 31, 23, 59, 50, tzinfo=UTC)) == ("2026-11", "2026-12", "2027-01")
    assert months_of_change(datetime(2027, 1, 31, 0, 0, tzinfo=UTC)) == ("2026-12", "2027-01", "2027-02")
    assert months_of_change(datetime(2027, 3, 1, 0, 0, 5, tzinfo=UTC)) == ("2027-02", "2027-03", "2027-04")


# the budget: 1 -> 4 with 900 of 1000 used -------------------------------------------------------


def _spend(world: World, store: DynamoStore, record: KeyRecord, tokens: int, at: datetime = BASE) -> None:
    rid = _admit(store, record, record.limits, at, tokens)
    assert rid is not None
    assert store.record_usage(_event(record.key_id, rid, tokens, tokens, at))


@pytest.mark.slow  # a thousand moto round trips (20 s on a busy 2-core machine): `make test`, not `make unit`
def test_growing_one_to_four_admits_at_most_the_budget_left_at_every_step_of_the_change(world: World) -> None:
    """Containers A and B keep the old key record (N=1) all along; C reads the record. Between every
    two store calls of the change (each seal, each carry put, the record's save), A and B try to admit:
    in all, at most the 100 tokens left are admitted, and at least 100 - N x (10 - 1)."""
    record = _key(world, monthly_token_budget=1000)
    a, b, c = world.container(), world.container(), world.container()
    for _ in range(9):
        _spend(world, a, record, 100)
    admitted: list[str] = []
    steps: list[str] = []
    at = BASE + timedelta(minutes=5)

    def probe() -> None:
        for store in (a, b):
            rid = _admit(store, record, record.limits, at, 10)
            if rid:
                admitted.append(rid)

    admin = world.made[0]

    def stepping(fn: Callable[..., Any], **kwargs: Any) -> Any:
        probe()
        steps.append(f"{fn.__name__} {kwargs.get('Key', kwargs.get('Item', {})).get('sk', {}).get('S', '')}")
        answer = admin._call(fn, **kwargs)
        probe()
        return answer

    updated = record.with_changes(limits=replace(record.limits, shards=4))
    saved = reshard(stepping, admin.client, world.tables.usage, admin.save_key, record, updated, BASE)
    assert saved.limits.shard_epoch == 1
    this_month = [step for step in steps if f"M#{MONTH}" in step]
    assert this_month == [f"update_item M#{MONTH}"] + [f"put_item M#{MONTH}@{s}~1" for s in range(4)]
    assert world.waits  # a probe met the sealed item before the new items were there, and waited
    fresh = admin.get_key(record.key_id)
    assert fresh is not None and fresh.limits == Limits(monthly_token_budget=1000, shards=4, shard_epoch=1)
    for _ in range(20):  # then everyone, old record or new, until the budget refuses everywhere
        for store, limits in ((a, record.limits), (b, record.limits), (c, fresh.limits)):
            rid = _admit(store, record, limits, at, 10)
            if rid:
                admitted.append(rid)
    assert 100 - 4 * (10 - 1) <= 10 * len(admitted) <= 100
    # the old item admits nothing more; the new items each stay within their share
    items = world.month_items(record.key_id)
    assert items[f"M#{MONTH}"]["sealed"] == {"N": "1"}
    sealed_total = int(items[f"M#{MONTH}"]["total_tokens"]["N"])  # 900 + what the probes got before the seal
    new = [int(items[f"M#{MONTH}@{s}~1"]["total_tokens"]["N"]) for s in range(4)]
    assert all(n <= 250 for n in new)
    assert sum(new) == sealed_total + 10 * len(admitted) - (sealed_total - 900)  # carried once, plus the rest


def test_concurrent_admissions_during_a_change_never_pass_the_budget(world: World) -> None:
    """Threads of two containers on the old record and one that rereads it admit while the change
    runs in another thread: at most the 100 tokens left."""
    record = _key(world, monthly_token_budget=1000)
    a, b, c = world.container(), world.container(), world.container()
    for _ in range(9):
        _spend(world, a, record, 100)
    done = threading.Event()
    at = BASE + timedelta(minutes=5)

    def worker(store: DynamoStore, reread: bool) -> list[str]:
        got: list[str] = []
        refusals_after = 0
        for _ in range(300):
            limits = record.limits
            if reread:
                fresh = store.get_key(record.key_id)
                assert fresh is not None
                limits = fresh.limits
            rid = _admit(store, record, limits, at, 10)
            if rid:
                got.append(rid)
            elif done.is_set():
                refusals_after += 1
                if refusals_after >= 8:
                    break
        return got

    with ThreadPoolExecutor(max_workers=7) as pool:
        futures = [pool.submit(worker, s, s is c) for s in (a, a, b, b, c, c)]
        try:
            _change(world, record, 4, BASE + timedelta(minutes=5))
        finally:
            done.set()
        admitted = [rid for f in futures for rid in f.result()]
    assert 10 * len(admitted) <= 100
    assert len(admitted) >= 1


# the minute: rpm exact in the minute of the change -----------------------------------------------


@pytest.mark.parametrize(("old", "new"), [(4, 2), (3, 1), (1, 3)])
def test_requests_per_minute_stay_exact_in_the_minute_of_the_change(world: World, old: int, new: int) -> None:
    """rpm 10, 6 used before the change (reservations still open): at most 4 more in that minute, from
    the old record or the new; the budget (1000, 300 committed) is never passed afterwards."""
    record = _key(world, requests_per_minute=10, monthly_token_budget=1000, shards=old)
    a, b = world.container(), world.container()
    minute = BASE + timedelta(minutes=7)
    before = [_admit(a, record, record.limits, minute + timedelta(seconds=i), 50) for i in range(6)]
    assert all(before)
    saved = _change(world, record, new, minute + timedelta(seconds=20))
    same_minute = [
        _admit(store, record, limits, minute + timedelta(seconds=30 + i), 50)
        for i in range(12)
        for store, limits in ((a, record.limits), (b, saved.limits))
    ]
    assert sum(1 for rid in same_minute if rid) == 4  # exact: not one more, and not one wrongly refused
    later: list[str | None] = []
    for m in range(1, 4):  # the following minutes: the budget has 1000 - 300 - 200 = 500 left
        for i in range(12):
            for store, limits in ((a, record.limits), (b, saved.limits)):
                later.append(_admit(store, record, limits, minute + timedelta(minutes=m, seconds=i), 50))
    admitted = sum(1 for rid in later if rid)
    assert 50 * admitted <= 500
    assert 50 * admitted >= 500 - new * (50 - 1)


# settlement and reports across a change ----------------------------------------------------------


def test_a_request_admitted_before_the_change_settles_on_its_old_item_and_reports_sum_exactly(world: World) -> None:
    record = _key(world, monthly_token_budget=10_000, shards=2)
    a, c = world.container(), world.container()
    settled_before = _admit(a, record, record.limits, BASE, 300)
    assert settled_before and a.record_usage(_event(record.key_id, settled_before, 120, 300, model="m0"))
    open_at_change = _admit(a, record, record.limits, BASE, 400)
    assert open_at_change is not None
    saved = _change(world, record, 3, BASE + timedelta(seconds=10))
    redirected = _admit(a, record, record.limits, BASE + timedelta(seconds=20), 200)  # A still holds the old record
    on_new = _admit(c, saved, saved.limits, BASE + timedelta(seconds=20), 200)
    assert redirected and on_new
    old_before = world.month_items(record.key_id)
    # the open request settles on the item that admitted it (epoch 0), whatever the key's layout now
    assert a.record_usage(_event(record.key_id, open_at_change, 50, 400, model="m1"))
    after = world.month_items(record.key_id)
    changed = [sk for sk in after if after[sk] != old_before.get(sk)]
    assert len(changed) == 1 and "~" not in changed[0]
    assert a.record_usage(_event(record.key_id, redirected, 70, 200, BASE + timedelta(seconds=21), model="m0"))
    assert c.record_usage(_event(record.key_id, on_new, 90, 200, BASE + timedelta(seconds=21), model="m1"))
    # replayed, in the same container or another: counted once
    for store in (a, c):
        assert store.record_usage(_event(record.key_id, open_at_change, 50, 400, model="m1")) is False
    total = 120 + 50 + 70 + 90
    (month,) = world.made[0].usage(UsageQuery("month", MONTH, key_id=record.key_id))
    assert (month.requests, month.total_tokens) == (4, total)
    (day,) = world.made[0].usage(UsageQuery("day", f"{BASE:%Y-%m-%d}", key_id=record.key_id))
    assert (day.requests, day.total_tokens) == (4, total)
    by_model = world.made[0].usage(UsageQuery("month", MONTH, key_id=record.key_id, by_model=True))
    assert [(r.model, r.requests, r.total_tokens) for r in by_model] == [("m0", 2, 190), ("m1", 2, 140)]
    everyone = world.made[0].usage(UsageQuery("month", MONTH))
    assert [(r.key_id, r.requests, r.total_tokens) for r in everyone] == [(record.key_id, 4, total)]
    # the carried items hold committed tokens only: no report reads them as usage
    carried = [item for sk, item in world.month_items(record.key_id).items() if "~" in sk]
    assert len(carried) == 3 and sum(int(i["total_tokens"]["N"]) for i in carried) == 120 + 400 + 70 + 90


# the next month ------------------------------------------------------------------------------------


def test_the_next_month_starts_on_the_new_layout_even_for_a_container_on_the_old_record(world: World) -> None:
    """A change in the last seconds of a month: a container whose key cache still holds N=1 admits in
    the new month on the new layout's items (the next month's old item is sealed too), and the new
    month's budget is whole."""
    record = _key(world, monthly_token_budget=1000)
    a = world.container()
    month_end = (BASE.replace(day=28) + timedelta(days=4)).replace(day=1, hour=0) - timedelta(seconds=5)
    next_month = f"{month_end + timedelta(seconds=10):%Y-%m}"
    _spend(world, a, record, 900, month_end - timedelta(seconds=30))
    _change(world, record, 2, month_end)
    rids = [_admit(a, record, record.limits, month_end + timedelta(seconds=10 + i), 100) for i in range(12)]
    assert sum(1 for r in rids if r) == 10  # 1000 in the new month, nothing carried from the old one
    items = world.month_items(record.key_id, next_month)
    assert items[f"M#{next_month}"]["sealed"] == {"N": "1"} and "total_tokens" not in items[f"M#{next_month}"]
    assert sum(int(items[f"M#{next_month}@{s}~1"]["total_tokens"]["N"]) for s in range(2)) == 1000


# a change that failed half-way, and what it costs ---------------------------------------------------


def test_a_change_cut_off_before_the_key_record_is_finished_by_running_it_again(world: World) -> None:
    record = _key(world, monthly_token_budget=1000, shards=2)
    a = world.container()
    for _ in range(6):
        _spend(world, a, record, 100)
    admin = world.made[0]
    updated = record.with_changes(limits=replace(record.limits, shards=3))

    def cut(_: KeyRecord) -> None:
        raise StoreUnavailable("cut off")

    with pytest.raises(StoreUnavailable):
        reshard(admin._call, admin.client, world.tables.usage, cut, record, updated, BASE)
    still = admin.get_key(record.key_id)
    assert still is not None and still.limits.shard_epoch is None
    # meanwhile the old record's containers admit on the new items, within the budget
    assert _admit(a, record, record.limits, BASE + timedelta(seconds=5), 100)
    with pytest.raises(ReshardConflict, match="3 shards is half done"):
        _change(world, record, 5, BASE + timedelta(seconds=6))
    saved = _change(world, record, 3, BASE + timedelta(seconds=7))
    assert saved.limits.shard_epoch == 1
    carried = [i for sk, i in world.month_items(record.key_id).items() if sk.endswith("~1")]
    assert sum(int(i["total_tokens"]["N"]) for i in carried) == 700  # 600 carried once, 100 admitted
    left = [_admit(a, saved, saved.limits, BASE + timedelta(seconds=9 + i), 100) for i in range(6)]
    # 300 left, as room 134/133/133 less the 100 admitted on one of them: two more fit (the bound)
    assert sum(1 for r in left if r) == 2


def test_the_write_cost_of_a_change(world: World, dynamo_tables: Tables) -> None:
    """3 x N (seals: last month, this one, the next) + 3 x N2 (carried items) + 1 (the key record) WRU, once."""
    record = _key(world, requests_per_minute=100, monthly_token_budget=10**6)
    _spend(world, world.container(), record, 500)
    reader = make_client(endpoint_url=dynamo_tables.endpoint, region="us-east-1")
    meter = WriteMeter(world.made[0].client, reader)
    _change(world, record, 4, BASE + timedelta(seconds=3))
    assert meter.total() == 3 * 1 + 3 * 4 + 1
    reader.close()


# requests in flight (max_concurrent) across a change ----------------------------------------------

GEN_START = datetime.fromtimestamp(generation_of(BASE) * LEASE_SECONDS + 100, UTC)


def _flying(world: World, store: DynamoStore, key: KeyRecord, limits: Limits, at: datetime, tries: int) -> list[str]:
    got = []
    for _ in range(tries):
        rid = uuid.uuid4().hex
        admission = store.admit(key.key_id, limits, at, request_id=rid)
        if admission.admitted:
            got.append(rid)
        else:
            assert admission.refused == "concurrent"
    return got


@pytest.mark.parametrize(("old", "new"), [(1, 2), (3, 2)])
def test_requests_in_flight_are_carried_and_released_through_a_change(world: World, old: int, new: int) -> None:
    """max_concurrent 4, 3 in flight at the change: 1 more, from the old record or the new; each of
    the 3 settling on its old item releases its carried count too, so exactly 3 more fit then."""
    record = _key(world, max_concurrent=4, shards=old)
    a, b = world.container(), world.container()
    at = GEN_START if month_of(GEN_START) == MONTH else BASE
    running = _flying(world, a, record, record.limits, at, 3)
    assert len(running) == 3
    saved = _change(world, record, new, at + timedelta(seconds=1))
    more = _flying(world, a, record, record.limits, at + timedelta(seconds=2), 3)
    more += _flying(world, b, saved, saved.limits, at + timedelta(seconds=2), 3)
    assert len(more) == 1
    for rid in running:
        assert a.record_usage(_event(record.key_id, rid, 5, 0, at + timedelta(seconds=3)))
        assert a.record_usage(_event(record.key_id, rid, 5, 0, at + timedelta(seconds=3))) is False  # once
    after = _flying(world, b, saved, saved.limits, at + timedelta(seconds=4), 5)
    assert len(after) == 3  # 4 in flight again: the one admitted after the change and these 3
    new_items = [i for sk, i in world.month_items(record.key_id, f"{at:%Y-%m}").items() if "~" in sk]
    assert sum(int(i["fl"]["N"]) for i in new_items) == 4


# the wait while a change prepares its items ---------------------------------------------------------


def test_an_admission_waits_for_the_new_items_within_its_deadline_then_answers_503(world: World) -> None:
    """Between the change's seals and its puts a container on the old record meets a sealed item and
    waits for the new items: the doubling pauses, never past the request's deadline (a fake clock that
    the pauses advance), then `StoreUnavailable` (503); nothing admitted anywhere."""
    record = _key(world, requests_per_minute=10)
    at = time.monotonic() + 5  # the request's deadline (the store calls themselves take milliseconds)
    now = [at - 0.1]  # the wait's clock, which only the pauses move: 0.1 s left at the first pause

    def pause(seconds: float) -> None:
        world.waits.append(seconds)
        now[0] += seconds

    client = make_client(endpoint_url=world.tables.endpoint, region="us-east-1")
    store = DynamoStore(
        client, world.tables.keys, world.tables.usage, layouts=Layouts(sleep=pause, clock=lambda: now[0])
    )
    world.made.append(store)
    admin = world.made[0]
    new = Layout(4, 1)
    _seal(admin._call, admin.client, world.tables.usage, record.key_id, MONTH, "", new)  # (a) only
    with deadline.until(at), pytest.raises(StoreUnavailable, match="shard layout is changing"):
        store.admit(record.key_id, record.limits, BASE, request_id="r1")
    assert world.waits == [0.02, 0.04]  # the next pause (0.08) would pass the deadline
    world.waits.clear()
    with pytest.raises(StoreUnavailable):  # no deadline (the CLI): every pause, ~1.9 s in all
        store.admit(record.key_id, record.limits, BASE, request_id="r2")
    assert world.waits == list(READY_WAITS)
    assert set(world.month_items(record.key_id)) == {f"M#{MONTH}"}  # no new item was created by waiting


def test_a_limit_changed_together_with_n_binds_containers_on_the_old_record_at_once(world: World) -> None:
    """Budget 1000 -> 600 and N 1 -> 2 in one update, 400 used: a container whose key cache still says
    1000 admits on the new layout with the limits the sealed item names: 200 more at most, not 600."""
    record = _key(world, monthly_token_budget=1000)
    a = world.container()
    for _ in range(4):
        _spend(world, a, record, 100)
    saved = _change(world, record, 2, BASE + timedelta(seconds=1), monthly_token_budget=600)
    assert saved.limits.monthly_token_budget == 600
    got = [_admit(a, record, record.limits, BASE + timedelta(seconds=2 + i), 50) for i in range(12)]
    assert 50 * sum(1 for r in got if r) == 200


def test_a_change_run_with_a_clock_already_in_the_next_month_still_carries_this_one(world: World) -> None:
    """The machine running `keys update` reads 00:00:30 of the next month while the gateways still
    serve the last seconds of this one: this month is sealed and carried too (the previous month of
    the change's clock), so its budget holds for the old record and the new alike."""
    record = _key(world, monthly_token_budget=1000)
    a, b = world.container(), world.container()
    first_of_next = (BASE.replace(day=28) + timedelta(days=4)).replace(day=1, hour=0)
    _spend(world, a, record, 900, first_of_next - timedelta(seconds=60))
    saved = _change(world, record, 2, first_of_next + timedelta(seconds=30))
    late = first_of_next - timedelta(seconds=10)
    got = [
        _admit(store, record, lim, late, 20) for _ in range(6) for store, lim in ((a, record.limits), (b, saved.limits))
    ]
    assert 20 * sum(1 for r in got if r) <= 100
    assert 20 * sum(1 for r in got if r) >= 100 - 2 * (20 - 1)
