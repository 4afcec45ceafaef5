"""The store: keys, limit counters and the usage ledger, behind one interface (`base.Store`)
with two adapters: `sqlite.SqliteStore` (local) and `dynamodb.DynamoStore` (deployed)."""

from .base import KeyExists, KeyNotFound, Store, UsageEvent, UsageQuery, UsageRow

__all__ = ["KeyExists", "KeyNotFound", "Store", "UsageEvent", "UsageQuery", "UsageRow"]
