"""Database engine set-up, migrations and the embedded PostgreSQL server."""
