"""Knowing before you queue: one hardware table, the cheap preflight checks, the memory model, the cost model and
the scaling table; `doctor` renders them and nothing imports it but the CLI. Pure arithmetic: no torch at import."""
