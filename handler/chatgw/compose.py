"""Builds everything once per container: settings, store, catalog, service, app.
Nothing here touches the network: clients connect on first use."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING

from chatgw.access.peppers import PepperBook, source_for
from chatgw.aws_lambda import snapstart_hooks as restore_safe
from chatgw.backends.base import BackendDeps
from chatgw.catalog import Catalog, load_catalog
from chatgw.observability import logs
from chatgw.observability.metrics import EmfSink, FanOut, Sink
from chatgw.observability.observer import Observer
from chatgw.service import Service
from chatgw.settings import Settings
from chatgw.store import open_from_settings
from chatgw.store.base import Store

if TYPE_CHECKING:
    from fastapi import FastAPI


def open_store(settings: Settings) -> Store:
    return open_from_settings(settings)


@dataclass(frozen=True, slots=True)
class Container:
    settings: Settings
    store: Store
    catalog: Catalog
    service: Service
    app: FastAPI
    deps: BackendDeps = field(default_factory=BackendDeps)


def build(
    settings: Settings,
    store: Store | None = None,
    deps: BackendDeps | None = None,
    catalog: Catalog | None = None,
    peppers: PepperBook | None = None,
    sinks: list[Sink] | None = None,
) -> Container:
    from chatgw.api.app import create_app

    logs.configure(settings.log_level)
    opened = store is None
    store = store if store is not None else open_store(settings)
    try:
        deps = deps if deps is not None else BackendDeps()
        catalog = catalog if catalog is not None else load_catalog(settings.models, deps)
        peppers = peppers if peppers is not None else PepperBook(source_for(settings, create=True))
        service = Service(store, catalog, settings, observer=observer_for(settings, sinks or []), peppers=peppers)
    except BaseException:
        if opened:  # a catalog or pepper that stops the start leaves no open database behind
            store.close()
        raise
    return Container(settings, store, catalog, service, create_app(service, settings), deps)


def observer_for(settings: Settings, sinks: list[Sink]) -> Observer:
    """The metrics go to the given sinks, and to EMF lines (stderr) when CHATGW_METRICS=emf."""
    if settings.metrics == "emf":
        sinks = [EmfSink(settings.metrics_namespace), *sinks]
    return Observer(FanOut(sinks), sample_rate=settings.log_sample_rate)


@cache
def container() -> Container:
    """The container's one instance, from the environment, with its SnapStart hooks registered."""
    built = build(Settings.from_env())
    restore_safe.register(built.deps, built.store, built.service)
    return built


def app() -> FastAPI:
    return container().app
