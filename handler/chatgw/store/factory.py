"""Build the store the settings name: DynamoDB when both tables are set, else SQLite.
The DynamoDB adapter (and so boto3) is imported only on that path."""

from __future__ import annotations

from chatgw.settings import Settings
from chatgw.store.base import Store

SQLITE_FILE = "chatgw.db"


def open_from_settings(settings: Settings, *, region: str | None = None) -> Store:
    if settings.keys_table and settings.usage_table:
        return open_dynamodb(settings.keys_table, settings.usage_table, settings, region=region)
    from chatgw.store.sqlite import SqliteStore

    return SqliteStore(settings.state_dir / SQLITE_FILE, usage_ttl_days=settings.usage_ttl_days)


def open_dynamodb(keys_table: str, usage_table: str, settings: Settings, *, region: str | None = None) -> Store:
    from chatgw.store.dynamodb.store import DynamoStore
    from chatgw.store.dynamodb.tables import make_client

    return DynamoStore(make_client(region=region), keys_table, usage_table, usage_ttl_days=settings.usage_ttl_days)
