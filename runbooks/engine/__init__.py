"""The engine every front end shares: registry, plans, executions, approvals, audit, store.

Nothing here imports a front end or a vendor SDK (see .importlinter).
"""
