"""What `chatgw serve` and `chatgw invoke` share: the gateway built on the options' store, and its
development key."""

from __future__ import annotations

import argparse
import os
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chatgw.access.keys import new_key
from chatgw.access.peppers import Peppers
from chatgw.cli.stores import open_store
from chatgw.settings import Settings, private_dir
from chatgw.store.base import NamesTables, Store

if TYPE_CHECKING:
    from chatgw.compose import Container

DEV_KEY_FILE = "dev-key"
DEV_KEY_HELP = "on DynamoDB, create a development key (every model, no limits) if this folder has none for it"


def dev_key_path(store: Store, state_dir: Path) -> Path:
    """The state folder's dev-key file of this store: `dev-key` for its own SQLite store,
    `dev-key.<keys table>` for a DynamoDB one, so that one store's key never replaces another's."""
    return state_dir / (f"{DEV_KEY_FILE}.{store.keys_table}" if isinstance(store, NamesTables) else DEV_KEY_FILE)


def dev_key(store: Store, state_dir: Path, peppers: Peppers, *, create: bool = True) -> tuple[str | None, bool]:
    """The development key of a state folder and store: (key, created now); (None, False) when there
    is none and `create` is off. Made on first use, mode 0600."""
    path = dev_key_path(store, state_dir)
    if path.exists():
        key = path.read_text().strip()
        parts = key.split("_")
        if len(parts) == 3 and store.get_key(parts[1]) is not None:
            return key, False
    if not create:
        return None, False
    pepper, stamp = peppers.for_new_key()
    key, record = new_key(
        "development",
        pepper=pepper,
        **stamp,
        owner="chatgw serve",
        tags={"purpose": "development"},
    )
    store.create_key(record)
    private_dir(state_dir)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    os.chmod(path, 0o600)
    return key, True


def local_dev_key(args: argparse.Namespace, settings: Settings, container: Container) -> tuple[str | None, bool]:
    """Into the local SQLite store always; into DynamoDB only when asked (--dev-key)."""
    store = container.store
    create = bool(getattr(args, "dev_key", False)) or not isinstance(store, NamesTables)
    return dev_key(store, settings.state_dir, container.service.peppers.peppers, create=create)


def build_gateway(args: argparse.Namespace, **overrides: Any) -> tuple[Settings, Container]:
    """Settings and container, with the store the options name (the same options as `chatgw keys`)."""
    from chatgw.access.peppers import PepperBook
    from chatgw.cli.peppers import pepper_source
    from chatgw.compose import build

    sinks = overrides.pop("sinks", None)
    settings = Settings.from_env()
    if getattr(args, "state_dir", None):
        settings = replace(settings, state_dir=Path(args.state_dir))
    settings = replace(settings, **overrides)
    peppers = PepperBook(pepper_source(args, settings, create=True))
    return settings, build(settings, store=open_store(args, settings), sinks=sinks, peppers=peppers)
