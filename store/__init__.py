"""Storage: SQLite sessions and memories, the FAISS vector index."""
