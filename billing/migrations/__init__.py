"""Alembic migrations of the cabinet's database (env.py, versions/); run through billing.db."""
