"""The store: one interface (Store), SQLite and PostgreSQL behind it."""
from workers.store.store import Store, open_store

__all__ = ["Store", "open_store"]
