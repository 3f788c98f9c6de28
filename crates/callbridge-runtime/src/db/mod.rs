//! Database pool and migrations.
