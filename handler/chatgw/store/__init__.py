"""The store: keys, limit counters and the usage ledger, behind one interface (`base.Store`)
with two adapters: `sqlite.SqliteStore` (local) and `dynamodb.DynamoStore` (deployed)."""

from chatgw.store.base import KeyExists, KeyNotFound, Store, UsageEvent, UsageQuery, UsageRow
from chatgw.store.factory import open_from_settings

__all__ = ["KeyExists", "KeyNotFound", "Store", "UsageEvent", "UsageQuery", "UsageRow", "open_from_settings"]
