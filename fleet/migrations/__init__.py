"""Alembic migrations of the fleet database (SQLite, PostgreSQL); see fleet.core.migrate."""
