"""Builders and helpers shared by the tests (not tests themselves; the pytest fixtures are in conftest.py)."""
