"""Knowledge bases: extraction, chunking, the index (SQLite FTS5 + chromadb), answers with citations,
retrieval evaluation, folder watching."""
