"""Celery settings (lowercase names only), loaded by ``workers.celery_app``.

Delivery contract: tasks are acknowledged after they finish (``task_acks_late``) and a task whose worker
dies is re-queued (``task_reject_on_worker_lost``); every task is idempotent, so a redelivery converges
instead of doing the work twice. Prefetch 1 keeps a slow task from holding other messages hostage.
The Redis ``visibility_timeout`` must exceed the longest task time limit and the longest retry
countdown, or Redis would hand a still-running (or still-waiting) task to a second worker.
"""

from settings import get_settings

broker_url = get_settings().redis_url
broker_connection_retry_on_startup = True
# 900 s: above the longest task time limit (300 s, the sweeps) and the longest retry countdown (60 s), yet short
# enough that the task of a worker killed outright (no chance to requeue) is redelivered within minutes.
# The unacked-restore sweep runs about every interval x throttle = 30 s.
broker_transport_options = {"visibility_timeout": 900, "unacked_restore_interval": 10, "unacked_restore_throttle": 3}

task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]
task_ignore_result = True
result_backend = None

task_acks_late = True
task_reject_on_worker_lost = True
worker_prefetch_multiplier = 1
task_soft_time_limit = 120
task_time_limit = 150
task_default_queue = "jobs"

# Flower reads the event stream.
worker_send_task_events = True
task_send_sent_event = True

timezone = "UTC"
enable_utc = True
worker_hijack_root_logger = False
