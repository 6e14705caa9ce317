"""Shared by every test: tests/ is on sys.path (pytest inserts a conftest's folder), so
tests in subfolders import helpers.py and dense_reference.py too."""
