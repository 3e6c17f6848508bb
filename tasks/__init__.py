"""Thin Celery tasks: explicit names, ids-only JSON arguments, a declared retry contract, one call into workers/."""
