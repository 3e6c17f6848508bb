"""50 concurrent creates through the API against a small cluster: admitted GPUs never exceed capacity,
every refusal is a clean 409 insufficient_gpu, and admitted == what fits."""

from __future__ import annotations

import threading

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from models import GpuReservation, Job
from tests.web.helpers import create_body

CREATE = "/internal/deployments/create"
REQUESTS = 50


def test_fifty_concurrent_creates_never_overcommit(app, acme, seed_nodes, clean_tables):
    # 20 GPUs; each request wants one 2-GPU replica, so exactly 10 fit.
    seed_nodes({"nvidia-l40s": [8, 8, 4]})
    barrier = threading.Barrier(REQUESTS)
    outcomes: list[tuple[int, str | None]] = []
    lock = threading.Lock()

    def submit(index: int) -> None:
        client = app.test_client()
        barrier.wait()
        response = client.post(CREATE, json=create_body(name=f"c{index}", gpus_per_replica=2), headers=acme)
        body = response.get_json()
        code = body["error"]["code"] if "error" in body else None
        with lock:
            outcomes.append((response.status_code, code))

    threads = [threading.Thread(target=submit, args=(index,)) for index in range(REQUESTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    accepted = [outcome for outcome in outcomes if outcome[0] == 202]
    refused = [outcome for outcome in outcomes if outcome[0] != 202]
    assert len(outcomes) == REQUESTS
    assert len(accepted) == 10
    assert set(refused) == {(409, "insufficient_gpu")}
    with Session(clean_tables) as session:
        per_node = dict(
            session.execute(
                select(GpuReservation.node_name, func.sum(GpuReservation.gpus))
                .where(GpuReservation.released_at.is_(None))
                .group_by(GpuReservation.node_name)
            ).all()
        )
        jobs = session.scalar(select(func.count()).select_from(Job))
    assert per_node == {"l40s-0": 8, "l40s-1": 8, "l40s-2": 4}
    assert jobs == 10
