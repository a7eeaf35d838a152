"""Recommendations delivered to the application: one table, replaced atomically per source."""
