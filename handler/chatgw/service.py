"""The use case: authorize a key, admit the request, call the model, meter the usage.
Knows nothing of HTTP nor of any door's wire format: it takes a `Conversation` and raises errors of
`errors.py`; the door renders the `Answer`."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from chatgw.access.key_cache import KeyCache
from chatgw.access.keys import KeyRecord, check_usable, model_allowed, parse_key, secret_matches
from chatgw.access.limits import need_of, raise_if_refused, rate_headers
from chatgw.access.peppers import LEGACY, PepperBook
from chatgw.access.refusals import RefusalCache
from chatgw.catalog import Catalog, ModelEntry
from chatgw.conversation import Answer, Conversation, Usage
from chatgw.deadline import Deadline
from chatgw.errors import (
    PERMISSION_MESSAGE,
    RETRYABLE_UPSTREAM,
    AuthenticationFailed,
    ChatgwError,
    InvalidRequest,
    ModelNotFound,
    PermissionDenied,
    UpstreamError,
    UpstreamTimeout,
)
from chatgw.fallbacks import ChainLog, fallback_chain
from chatgw.metering.estimate import image_count
from chatgw.metering.reservations import output_cap, reserves_tokens, with_cap, worst_case
from chatgw.metering.usage import NONE as NO_USAGE
from chatgw.metering.usage import failed_call_usage, plus, usage_event, usage_of
from chatgw.observability import logs
from chatgw.observability.observer import Observer, Report
from chatgw.settings import Settings
from chatgw.store.base import Store, UsageEvent, UsageStatus
from chatgw.store.deadline import settlement_deadline, until
from chatgw.store.on_loop import store_call

SECRET_RECHECK_SECONDS = 1.0
"""A secret that does not match a cached record re-reads it (at most this often per key): a rotated
key's new secret works at once, not after the cache time, and wrong secrets cost few reads."""


@dataclass(slots=True)
class Call:
    """One request's identity and clock."""

    request_id: str
    deadline: Deadline
    started: float = field(default_factory=time.monotonic)
    now: datetime = field(default_factory=lambda: datetime.now(UTC))
    report: Report | None = None

    def __post_init__(self) -> None:
        if self.report is None:
            self.report = Report(self.request_id)

    @property
    def seen(self) -> Report:
        """What the operator will see of this request (observability/observer.py)."""
        assert self.report is not None
        return self.report

    def elapsed_ms(self) -> int:
        return int((time.monotonic() - self.started) * 1000)


@dataclass(slots=True)
class Prepared:
    """A request that passed every check and was admitted: ready for the backend."""

    record: KeyRecord
    conversation: Conversation
    chain: list[ModelEntry]
    headers: dict[str, str]
    reserved: int = 0
    """Tokens admission reserved (0: the key has no token limit); settlement replaces them."""


class Service:
    def __init__(
        self,
        store: Store,
        catalog: Catalog,
        settings: Settings,
        clock: Callable[[], float] = time.monotonic,
        peppers: PepperBook | None = None,
        observer: Observer | None = None,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.store = store
        self.catalog = catalog
        self.settings = settings
        self.peppers = peppers if peppers is not None else PepperBook.legacy(settings.pepper)
        self.observer = observer if observer is not None else Observer()
        self._clock = clock
        self.wall_clock = wall_clock
        """What time it is for a new request (`Call.now`): limits' windows, the ledger's dates."""
        self.key_cache = KeyCache(clock, settings.key_cache_seconds)
        self._refusals = RefusalCache()

    # who is calling ------------------------------------------------------------------

    async def authenticate(
        self, presented: str | None, now: datetime | None = None, deadline: Deadline | None = None
    ) -> KeyRecord:
        """The key's record, for every route: a 401 unless the key is known and its secret right,
        a 403 unless it is enabled and not expired (the one check of key usability). Its store
        reads end by the request's `deadline` (store/deadline.py)."""
        if not presented:
            raise AuthenticationFailed(
                "Missing API key: send it as `Authorization: Bearer KEY` or `x-api-key: KEY`.",
                code="missing_api_key",
            )
        key_id, secret = parse_key(presented)
        with until(deadline.at if deadline is not None else None):
            record = await self._key(key_id)
            pepper = await self._pepper(record) if record is not None else b""
            wrong = record is not None and not secret_matches(secret, record.secret_hash, pepper)
            if wrong and self.key_cache.age(key_id) >= SECRET_RECHECK_SECONDS:  # rotated since it was cached?
                record = await self._key(key_id, fresh=True)
                pepper = await self._pepper(record) if record is not None else b""
        if record is None or not secret_matches(secret, record.secret_hash, pepper):
            raise AuthenticationFailed("Invalid API key.")
        check_usable(record, now or self.wall_clock())
        return record

    async def _pepper(self, record: KeyRecord) -> bytes:
        pepper = self.peppers.get(record.pepper_version)
        if pepper is None:
            pepper, problem = await asyncio.to_thread(self.peppers.reload_for, record.pepper_version)
            if pepper is None:  # the key cannot match: the log says why, the client gets the usual 401
                logs.throttled_event(  # a client can send such a key on every request: once a minute
                    "key_pepper_unknown",
                    record.key_id,
                    logging.ERROR,
                    key_id=record.key_id,
                    pepper_version=record.pepper_version or LEGACY,
                    problem=problem,
                )
                raise AuthenticationFailed("Invalid API key.")
        if record.pepper_id is not None and record.pepper_id != self.peppers.fingerprint(record.pepper_version):
            logs.event(  # hashed with another pepper of that name: another secret or state folder made it
                "key_pepper_mismatch",
                logging.ERROR,
                key_id=record.key_id,
                pepper_version=record.pepper_version or LEGACY,
                problem=f"the key was made with a different pepper {record.pepper_version} than {self.peppers.label}",
            )
            raise AuthenticationFailed("Invalid API key.")
        return pepper

    async def _key(self, key_id: str, fresh: bool = False) -> KeyRecord | None:
        record = None if fresh else self.key_cache.get(key_id)
        if record is not None or self.key_cache.unknown.seen(key_id):
            return record
        with self.observer.store_call("get_key"):
            record = await store_call(self.store, lambda: self.store.get_key(key_id))
        self.key_cache.put(key_id, record)
        return record

    def forget_cached_keys(self) -> None:
        """After a SnapStart restore: what was cached before the snapshot is as old as the snapshot
        (and the monotonic clock does not count the time it was stored)."""
        self.key_cache.clear()
        self._refusals = RefusalCache()

    def models_for(self, record: KeyRecord) -> list[ModelEntry]:
        return [e for e in self.catalog.entries() if model_allowed(record, e.name)]

    # what it may do --------------------------------------------------------------------

    async def prepare(self, record: KeyRecord, request: Conversation, call: Call) -> Prepared:
        entry = self.catalog.get(request.model)
        if not model_allowed(record, entry.name):  # as if missing: a key cannot map the catalog
            raise ModelNotFound(f"The model `{request.model}` does not exist.", param="model")
        call.seen.resolved(entry.name, entry.backend.kind)
        if request.stream and not record.allow_streaming:
            raise PermissionDenied(f"{PERMISSION_MESSAGE} This key may not stream.", param="stream")
        images = image_count(request)
        if images > self.settings.max_images:
            raise InvalidRequest(
                f"The request holds {images} images, above the gateway's limit of {self.settings.max_images} "
                "per request (CHATGW_MAX_IMAGES).",
                param="messages",
            )
        request = self._apply_token_cap(record, request)
        request, reserve = self._reservation(record, entry, request)
        entry.check(request)
        chain = fallback_chain(self.catalog, record, entry, request)
        headers = await self._admit(record, call, reserve)
        return Prepared(record, request, chain, headers, reserve)

    def _reservation(self, record: KeyRecord, entry: ModelEntry, request: Conversation) -> tuple[Conversation, int]:
        """A token-limited key's request reserves its worst case, and is sent with the output cap
        that worst case assumed (docs/store.md, "Reservations")."""
        if not reserves_tokens(record.limits):
            return request, 0
        cap = output_cap(request, record, entry.max_output_tokens, self.settings.default_max_output_tokens)
        return with_cap(request, cap), worst_case(request, cap, entry.image_tokens)

    @staticmethod
    def _apply_token_cap(record: KeyRecord, request: Conversation) -> Conversation:
        """The key's `max_tokens_per_request` holds for the whole request: `n` choices of
        `max_tokens` each must fit in it. Without a client cap, each choice gets `cap // n`."""
        cap = record.limits.max_tokens_per_request
        if cap is None:
            return request
        n = request.choices
        if n > cap:
            choices = request.spelled("choices")
            raise InvalidRequest(
                f"`{choices}` is {n}, above this key's limit of {cap} tokens per request "
                "(at least one token per choice).",
                param=choices,
            )
        asked = request.max_output_tokens
        if asked is None:
            return request.with_cap(cap // n)
        if asked * n > cap:
            param = request.spelled("max_output_tokens")
            times = f" x `{request.spelled('choices')}` ({n}) = {asked * n}" if n > 1 else ""
            raise InvalidRequest(
                f"`{param}` is {asked}{times}, above this key's limit of {cap} tokens per request.", param=param
            )
        return request

    async def _admit(self, record: KeyRecord, call: Call, reserve: int) -> dict[str, str]:
        limits = record.limits
        if not limits.needs_admission:
            return {}
        need = need_of(reserve)
        admission = self._refusals.get(record.key_id, limits, call.now, need)
        if admission is None:  # not refused earlier in this minute: ask the store
            with self.observer.store_call("admit", call.request_id), until(call.deadline.at):
                admission = await store_call(
                    self.store,
                    lambda: self.store.admit(
                        record.key_id, limits, call.now, request_id=call.request_id, reserve=reserve
                    ),
                )
            self._refusals.remember(record.key_id, limits, admission, call.now, need)
        rpm, tpm = limits.requests_per_minute, limits.tokens_per_minute
        raise_if_refused(admission, rpm=rpm, tpm=tpm, now=call.now, concurrent=limits.max_concurrent)
        return rate_headers(admission, rpm=rpm, tpm=tpm, now=call.now)

    # the call ------------------------------------------------------------------------

    async def complete(self, prepared: Prepared, call: Call) -> tuple[Answer, Usage, UsageEvent]:
        """The buffered answer, its usage, and its usage event (which the caller records after
        responding). A model of the chain that failed after the upstream may have worked is booked
        too (`metering.usage.failed_call_usage`): a flood of timeouts still spends the budget."""
        request = prepared.conversation
        chain = ChainLog(call.request_id, request.model)
        last_error: ChatgwError | None = None
        spent = NO_USAGE
        for entry in prepared.chain:
            try:
                async with asyncio.timeout(max(0.0, call.deadline.remaining())):
                    answer = await entry.backend.complete(request, call.deadline)
            except TimeoutError:
                last_error = UpstreamTimeout(f"The model `{entry.name}` did not answer before the deadline.")
            except RETRYABLE_UPSTREAM as exc:
                last_error = exc
            except Exception as exc:
                error = exc if isinstance(exc, ChatgwError) else UpstreamError("The model backend failed.")
                if not isinstance(exc, ChatgwError):  # a backend bug: a 502 and a usage event, as when streaming
                    logs.event(
                        "backend_failed", logging.ERROR, request_id=call.request_id, error_type=type(exc).__name__
                    )
                else:
                    chain.failed(entry, exc)
                chain.flush()
                self.upstream_failed(call, entry, exc, falling_back=False)
                spent = plus(spent, self._failed_call(prepared, error))
                await self.record(self._failed_event(prepared, call, entry, spent), call.deadline)
                raise error from None
            else:
                chain.served(entry)
                chain.flush()
                usage, estimated = usage_of(request, answer)  # the client's: the model that answered
                booked = plus(usage, spent)  # the ledger's: every model of the chain that worked
                estimated = estimated or spent != NO_USAGE
                event = self.event(prepared, call, entry, status="ok", usage=booked, estimated=estimated)
                return answer, usage, event
            assert last_error is not None
            spent = plus(spent, self._failed_call(prepared, last_error))
            chain.failed(entry, last_error)
            self.upstream_failed(call, entry, last_error, falling_back=entry is not prepared.chain[-1])
        assert last_error is not None
        chain.flush()
        await self.record(self._failed_event(prepared, call, prepared.chain[-1], spent), call.deadline)
        raise chain.whole_chain_failed(last_error)

    @staticmethod
    def _failed_call(prepared: Prepared, error: BaseException) -> Usage:
        return failed_call_usage(prepared.conversation, error, buffered=True, reserved=prepared.reserved)

    def _failed_event(self, prepared: Prepared, call: Call, entry: ModelEntry, spent: Usage) -> UsageEvent:
        return self.event(prepared, call, entry, status="error", usage=spent, estimated=spent != NO_USAGE)

    # the ledger ----------------------------------------------------------------------

    def event(
        self,
        prepared: Prepared,
        call: Call,
        entry: ModelEntry,
        *,
        status: UsageStatus,
        usage: Usage | None = None,
        estimated: bool = False,
        ttft_ms: int | None = None,
    ) -> UsageEvent:
        event = usage_event(
            key_id=prepared.record.key_id,
            request_id=call.request_id,
            at=call.now,
            model=prepared.conversation.model,
            served_model=entry.name,
            backend=entry.backend.kind,
            price=entry.price,
            usage=usage or NO_USAGE,
            status=status,
            streamed=prepared.conversation.stream,
            latency_ms=call.elapsed_ms(),
            ttft_ms=ttft_ms,
            estimated=estimated,
            reserved=prepared.reserved,
            door=call.seen.door,
        )
        call.seen.metered(event, served_model=entry.name)
        return event

    def upstream_failed(self, call: Call, entry: ModelEntry, error: BaseException, *, falling_back: bool) -> None:
        self.observer.upstream_failed(call.seen, entry.name, entry.backend.kind, error, falling_back=falling_back)

    async def record(self, event: UsageEvent, deadline: Deadline | None = None) -> None:
        """Write the usage event; if the store fails, log it whole so that it can be replayed.
        Bounded by a settlement budget, not by the request's `deadline` (store/deadline.py)."""
        try:
            settle_by = settlement_deadline(deadline.at if deadline is not None else None)
            with self.observer.store_call("record_usage", event.request_id), until(settle_by):
                await store_call(self.store, lambda: self.store.record_usage(event))
        except Exception as exc:
            logged = getattr(exc, "event", event)  # the store may say which writes are still pending
            logs.event("usage_event", logging.ERROR, usage_event=logged.to_log(), reason=type(exc).__name__)
