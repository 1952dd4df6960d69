"""Importable targets for the python-function executor tests (run in a subprocess)."""
