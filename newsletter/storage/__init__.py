"""The store: tables, engines and migrations, and the queries.

``models`` (the schema), ``database`` (engines, sessions, Alembic), ``migrations/``,
``store`` (every query of the pipeline except the ledger's), ``counters`` (the per-edition
counters the database keeps), ``bulk`` (set-based reads and writes for big lists) and
``planner`` (statistics refreshed after bulk writes). Everything above reads and writes
through here; nothing here imports a stage above it.
"""
