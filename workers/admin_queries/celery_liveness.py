"""Worker liveness and queue depth, asked of Celery and Redis because they live nowhere else."""

from __future__ import annotations

from typing import Any


def worker_liveness(celery_app: Any, *, timeout: float = 1.0) -> dict[str, Any]:
    """Ping the workers through the broker; an empty or failed reply means none is alive.

    A broadcast ping is slow and racy as a lock, but as a liveness probe on an admin page it is what
    Flower does too; the short timeout bounds the page's latency.
    """
    try:
        replies = celery_app.control.inspect(timeout=timeout).ping() or {}
    except Exception as error:  # any broker failure means "cannot tell", reported, never a 500
        return {"alive": False, "count": 0, "names": [], "error": f"{type(error).__name__}: {error}"}
    names = sorted(replies)
    return {"alive": bool(names), "count": len(names), "names": names, "error": None if names else "no reply"}


def _priority_queue_keys(queue: str, key_prefix: str) -> list[str]:
    # Celery's Redis transport keeps one list per priority step: "q", then "q\x06\x16<priority>".
    return [key_prefix + queue] + [f"{key_prefix}{queue}\x06\x16{priority}" for priority in (3, 6, 9)]


def queue_depths(redis_client: Any, queues: list[str], *, key_prefix: str = "") -> dict[str, Any]:
    """Messages waiting per Celery queue (Redis LLEN), or ``available: False`` with the error."""
    try:
        depths = {
            queue: sum(int(redis_client.llen(key)) for key in _priority_queue_keys(queue, key_prefix))
            for queue in queues
        }
    except Exception as error:  # an unreachable broker is a finding of the report, not a crash
        return {"available": False, "depths": {}, "total": None, "error": f"{type(error).__name__}: {error}"}
    return {"available": True, "depths": depths, "total": sum(depths.values()), "error": None}
