"""Numbered schema migrations, keyed on SQLite's ``PRAGMA user_version``.

Migration N moves a catalog from version N-1 to N. A released migration is never edited:
change the schema by appending a new one (and mirror it in ``schema.py``). Each migration runs
in one transaction together with the ``user_version`` bump, so a crash leaves the old version.
"""

from __future__ import annotations

MIGRATIONS: list[list[str]] = [
    # 1: models, lineage, chats
    [
        """
        CREATE TABLE model (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            family TEXT,
            kind TEXT NOT NULL DEFAULT 'chat',          -- chat | base | embedding
            format TEXT NOT NULL,                       -- gguf | hf
            architecture TEXT,
            quantization TEXT,
            parameters INTEGER,
            context_length INTEGER,
            path TEXT NOT NULL,
            storage TEXT NOT NULL DEFAULT 'reference',  -- reference (left where it is) | store (ours)
            size_bytes INTEGER,
            sha256 TEXT,
            source TEXT,                                -- embedded:<dist> | hf:<repo> | import | derived
            chat_template TEXT,
            metadata_json TEXT NOT NULL DEFAULT '{}',
            created_at TEXT NOT NULL
        )
        """,
        """
        CREATE TABLE lineage (
            id INTEGER PRIMARY KEY,
            parent_type TEXT NOT NULL,
            parent_id INTEGER NOT NULL,
            child_type TEXT NOT NULL,
            child_id INTEGER NOT NULL,
            operation TEXT NOT NULL,
            params_json TEXT NOT NULL DEFAULT '{}',
            created_at TEXT NOT NULL
        )
        """,
        "CREATE INDEX ix_lineage_parent ON lineage (parent_type, parent_id)",
        "CREATE INDEX ix_lineage_child ON lineage (child_type, child_id)",
        """
        CREATE TABLE chat_session (
            id INTEGER PRIMARY KEY,
            title TEXT NOT NULL,
            model_name TEXT,
            system_prompt TEXT NOT NULL,
            params_json TEXT NOT NULL DEFAULT '{}',
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        )
        """,
        """
        CREATE TABLE chat_message (
            id INTEGER PRIMARY KEY,
            session_id INTEGER NOT NULL REFERENCES chat_session (id) ON DELETE CASCADE,
            role TEXT NOT NULL,
            content TEXT NOT NULL,
            model_name TEXT,
            prompt_tokens INTEGER,
            completion_tokens INTEGER,
            ttft_ms REAL,
            tokens_per_s REAL,
            finish_reason TEXT,
            created_at TEXT NOT NULL
        )
        """,
        "CREATE INDEX ix_chat_message_session ON chat_message (session_id, id)",
    ],
    # 2: jobs (long work in the background, progress in a JSONL file per job)
    [
        """
        CREATE TABLE job (
            id INTEGER PRIMARY KEY,
            kind TEXT NOT NULL,
            target TEXT NOT NULL,                       -- module:function the worker runs
            title TEXT NOT NULL,
            status TEXT NOT NULL,                       -- queued | running | succeeded | failed | cancelled | interrupted
            params_json TEXT NOT NULL DEFAULT '{}',
            result_json TEXT,
            error TEXT,
            pid INTEGER,
            events_path TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            created_at TEXT NOT NULL,
            started_at TEXT,
            finished_at TEXT
        )
        """,
        "CREATE INDEX ix_job_status ON job (status)",
    ],
    # 3: evaluation runs, per-item results, and the request cache (re-runs and crash recovery skip answered requests)
    [
        """
        CREATE TABLE eval_run (
            id INTEGER PRIMARY KEY,
            model_name TEXT NOT NULL,
            model_sha256 TEXT,
            quantization TEXT,
            engine TEXT,
            task TEXT NOT NULL,
            task_version TEXT NOT NULL,
            prompt_hash TEXT NOT NULL,
            chat_template_hash TEXT,
            n_items INTEGER NOT NULL,
            n_skipped INTEGER NOT NULL DEFAULT 0,
            metrics_json TEXT NOT NULL DEFAULT '{}',
            stderr_json TEXT NOT NULL DEFAULT '{}',
            config_json TEXT NOT NULL DEFAULT '{}',
            job_id INTEGER,
            created_at TEXT NOT NULL
        )
        """,
        "CREATE INDEX ix_eval_run_task ON eval_run (task, model_name)",
        """
        CREATE TABLE eval_item (
            id INTEGER PRIMARY KEY,
            run_id INTEGER NOT NULL REFERENCES eval_run (id) ON DELETE CASCADE,
            idx INTEGER NOT NULL,
            prompt TEXT NOT NULL,
            target TEXT,
            response TEXT,
            scores_json TEXT NOT NULL DEFAULT '{}'
        )
        """,
        "CREATE INDEX ix_eval_item_run ON eval_item (run_id, idx)",
        """
        CREATE TABLE eval_cache (
            key TEXT PRIMARY KEY,
            value_json TEXT NOT NULL,
            created_at TEXT NOT NULL
        )
        """,
    ],
    # 4: training datasets and finetuning runs
    [
        """
        CREATE TABLE dataset (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            form TEXT NOT NULL,                         -- messages | sharegpt | alpaca | text (as imported)
            path TEXT NOT NULL,                         -- folder with train.jsonl / validation.jsonl (normalized)
            source TEXT,                                -- the file it came from
            sha256 TEXT,                                -- of the source file
            train_rows INTEGER NOT NULL,
            validation_rows INTEGER NOT NULL,
            stats_json TEXT NOT NULL DEFAULT '{}',      -- token-length statistics (with which tokenizer)
            created_at TEXT NOT NULL
        )
        """,
        """
        CREATE TABLE train_run (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            recipe TEXT NOT NULL,
            config_json TEXT NOT NULL DEFAULT '{}',     -- the resolved recipe
            base_model TEXT NOT NULL,
            dataset TEXT,
            run_dir TEXT NOT NULL,
            job_id INTEGER,
            status TEXT NOT NULL,                       -- created | running | stopped | failed | finished
            estimate_json TEXT NOT NULL DEFAULT '{}',   -- memory estimate
            summary_json TEXT NOT NULL DEFAULT '{}',    -- final loss, measured peak, outputs
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        )
        """,
    ],
    # 5: knowledge bases; chats bound to one; the sources an answer was given
    [
        """
        CREATE TABLE knowledge_base (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            path TEXT NOT NULL,                         -- its index folder: index.sqlite + chroma/
            folders_json TEXT NOT NULL DEFAULT '[]',    -- the folders and files it indexes
            embedder TEXT NOT NULL,                     -- catalog embedding model its vectors come from
            dimension INTEGER NOT NULL,
            chunk_size INTEGER NOT NULL,
            chunk_overlap INTEGER NOT NULL,
            threshold REAL NOT NULL,                    -- refuse below this evidence (best cosine similarity)
            stats_json TEXT NOT NULL DEFAULT '{}',      -- files, chunks, skipped, last sync
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        )
        """,
        "ALTER TABLE chat_session ADD COLUMN kb_name TEXT",
        "ALTER TABLE chat_session ADD COLUMN mode TEXT NOT NULL DEFAULT 'chat'",  # chat | kb | agent
        "ALTER TABLE chat_message ADD COLUMN sources_json TEXT",
    ],
    # 6: the tools that act (python) a user enabled in an agent chat, beyond the default read-only ones; a
    # knowledge base's answer pipeline (question filter, relevance gate, answer check, extractive answers); the
    # users' verdicts on answers, which `kb eval --tune` learns the refusal threshold from
    [
        "ALTER TABLE chat_session ADD COLUMN tools_json TEXT NOT NULL DEFAULT '[]'",
        "ALTER TABLE knowledge_base ADD COLUMN pipeline_json TEXT NOT NULL DEFAULT '{}'",
        """
        CREATE TABLE answer_feedback (
            id INTEGER PRIMARY KEY,
            kb_name TEXT NOT NULL,
            message_id INTEGER,                         -- the chat message judged, when it came from a chat
            question TEXT NOT NULL,
            answer TEXT NOT NULL,
            verdict TEXT NOT NULL,                      -- bad | good
            refused INTEGER NOT NULL DEFAULT 0,         -- the answer judged was the refusal
            created_at TEXT NOT NULL
        )
        """,
        "CREATE INDEX answer_feedback_kb ON answer_feedback (kb_name)",
    ],
    # 7: images attached to chat messages; the files live content-addressed under <home>/images (sha256), so
    # the same picture in two chats is stored once and freed when no message names it
    [
        """
        CREATE TABLE chat_image (
            id INTEGER PRIMARY KEY,
            message_id INTEGER NOT NULL REFERENCES chat_message (id) ON DELETE CASCADE,
            position INTEGER NOT NULL,                  -- order among the message's images
            sha256 TEXT NOT NULL,
            mime TEXT NOT NULL,                         -- image/png | image/jpeg (as stored, after preparing)
            width INTEGER NOT NULL,
            height INTEGER NOT NULL,
            size_bytes INTEGER NOT NULL,
            name TEXT NOT NULL,                         -- the file name the user attached
            created_at TEXT NOT NULL
        )
        """,
        "CREATE INDEX ix_chat_image_message ON chat_image (message_id, position)",
        "CREATE INDEX ix_chat_image_sha ON chat_image (sha256)",
    ],
]

LATEST_VERSION = len(MIGRATIONS)
