"""The catalog: an indexer that follows the ledger into SQL, and search over it."""
