"""The terminal front end: invoke tasks generated from the runbook registry.

Thin by design: parse, call the engine, render. Heavy modules (rich, structlog, SDKs) are
imported inside task bodies so that ``invoke --list`` stays instant.
"""
