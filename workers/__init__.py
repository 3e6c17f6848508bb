"""The real work of the orchestration service, as plain typed functions.

Web handlers and Celery tasks are thin shells around this package: requests.py (the transactional half
of every POST), admission.py and placement.py (GPU capacity), deployments.py and observe.py (Kubernetes
operations), inventory.py (cluster -> Postgres), jobs.py (job state transitions).
"""
