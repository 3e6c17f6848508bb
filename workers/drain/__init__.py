"""Node drain, make-before-break: move our vLLM replicas off a node without ever dropping below desired.

``kubectl drain`` evicts first and lets the ReplicaSet replace afterwards, so every evicted model replica
is missing for a full model load (minutes). Here, for each of our deployments with ``k`` pods on the node:

1. cordon the node (the row records who and why);
2. list its pods page by page and sort them like kubectl (DaemonSet and mirror pods stay, unmanaged pods
   only with ``force``, foreign emptyDir pods only with ``delete_emptydir_data``; ours are always movable);
3. admit ``k`` extra replicas elsewhere (GPU reservations). No room -> unless ``allow_capacity_loss`` the
   job fails ``no_capacity_elsewhere`` with the node cordoned and nothing evicted;
4. surge the Deployment to ``desired + k`` and wait (re-enqueueing itself with a countdown, never holding
   a worker slot) until ``readyReplicas >= desired + k``;
5. evict the old pods one by one through the Eviction API; after each accepted eviction scale the
   Deployment down by one, so the ReplicaSet removes the not-yet-ready replacement it just created rather
   than a Ready pod, and the PDB (maxUnavailable 1, counted against the lowered replica count) allows the
   next eviction at once. A 429 from a PDB is retried with backoff until the job's timeout and shown as
   ``blocked`` with the budget's message;
6. evict foreign pods the kubectl way, wait until no evictable pod is left on the node, succeed.

The task runs one *step* at a time and stores the phase and plan in ``job.progress``; every step is
idempotent (absolute replica counts, "already gone" counts as evicted), so a redelivered or duplicated
message resumes from the last committed phase. Cancellation (``cancel_requested``) and the deadline are
checked at every step: surged deployments are scaled back, surge reservations released, the node stays
cordoned and the job ends CANCELLED (or FAILED with the reason).

Modules, in the order a drain meets them: ``options`` (what the caller may ask for), ``submit`` (write
or cancel the job), ``dry_run`` (what a drain would do), ``pods`` (list and sort the node's pods like
kubectl), ``plan`` (claim deployments, reserve surge room), ``surge``, ``evict``, ``endings`` (success,
cancellation, failure, timeout), ``phases`` (the step machine), ``progress`` (what ``job.progress``
records), ``step_tokens`` (which message may act) and ``runner`` (one step, one transaction).
"""

from workers.drain.dry_run import plan_impact
from workers.drain.options import DEFAULT_TIMEOUT_SECONDS, MAX_TIMEOUT_SECONDS, DrainOptions
from workers.drain.runner import run_step
from workers.drain.step_tokens import LOST_STEP_GRACE_SECONDS
from workers.drain.submit import request_cancel, request_drain

__all__ = [
    "DEFAULT_TIMEOUT_SECONDS",
    "LOST_STEP_GRACE_SECONDS",
    "MAX_TIMEOUT_SECONDS",
    "DrainOptions",
    "plan_impact",
    "request_cancel",
    "request_drain",
    "run_step",
]
