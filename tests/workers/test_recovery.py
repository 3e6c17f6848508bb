"""Recovery decisions (pure): ladder, backoff, give-up, episode closing, never acting on waiting-for-GPUs."""

from __future__ import annotations

from workers.diagnosis import Diagnosis, PodProblem, PodView, Reason
from workers.recovery import (
    Outcome,
    RecoveryPolicy,
    RecoveryState,
    Step,
    decide,
    give_up_reason,
)

POLICY = RecoveryPolicy(max_attempts=3, base_backoff_seconds=60, max_backoff_seconds=600)


def pod(name="p", node="n1") -> PodView:
    return PodView(uid=f"u-{name}", name=name, namespace="ms", labels={}, node=node, phase="Running", ready=False,
                   restarts=3, gpus=1, deleting=False, created_at=0.0, started_at=0.0, waiting_reason=None,
                   waiting_message=None, terminated_reason=None, terminated_message=None, unschedulable_message=None)


def sick(reason: Reason, status="DEGRADED", ready=0, pods=("p",)) -> Diagnosis:
    problems = [PodProblem(pod(name), reason, f"{name} {reason}") for name in pods]
    return Diagnosis(status, ready, reason, f"{reason}", problems)


NO_EPISODE = RecoveryState()


def act(diagnosis, state=NO_EPISODE, now=1000.0, replicas=1, can_restart=True, stuck=False):
    return decide(diagnosis, state, POLICY, now, replicas=replicas, can_restart=can_restart, stuck_creating=stuck)


def test_first_attempt_deletes_the_sick_pods():
    decision = act(sick(Reason.CRASH_LOOP, pods=("a", "b")))
    assert (decision.kind, decision.step, decision.attempt) == ("act", Step.DELETE_PODS, 1)
    assert [p.name for p in decision.pods] == ["a", "b"]


def test_backoff_doubles_between_attempts():
    state = RecoveryState(attempts=1, last_at=1000.0, outcome=Outcome.ATTEMPTED)
    assert act(sick(Reason.CRASH_LOOP), state, now=1059.0).kind == "wait"
    assert act(sick(Reason.CRASH_LOOP), state, now=1060.0).kind == "act"
    state = RecoveryState(attempts=2, last_at=1000.0, outcome=Outcome.ATTEMPTED)
    assert act(sick(Reason.CRASH_LOOP), state, now=1119.0).kind == "wait"
    assert POLICY.backoff_after(10) == 600  # capped


def test_last_attempt_of_a_multi_replica_deployment_is_a_rolling_restart():
    state = RecoveryState(attempts=2, last_at=0.0, outcome=Outcome.ATTEMPTED)
    assert act(sick(Reason.CRASH_LOOP), state, replicas=3).step == Step.RESTART
    # One replica: a restart would need a surge GPU beyond the admitted ones, so the pod is deleted instead.
    assert act(sick(Reason.CRASH_LOOP), state, replicas=1).step == Step.DELETE_PODS
    creating = sick(Reason.CRASH_LOOP, status="CREATING")
    assert act(creating, state, replicas=3, can_restart=False).step == Step.DELETE_PODS


def test_gives_up_after_the_last_attempt_has_had_its_time():
    state = RecoveryState(attempts=3, last_at=1000.0, outcome=Outcome.ATTEMPTED, reason="crash_loop")
    assert act(sick(Reason.CRASH_LOOP), state, now=1200.0).kind == "wait"
    decision = act(sick(Reason.CRASH_LOOP), state, now=1240.0)
    assert decision.kind == "give_up"
    given_up = RecoveryState(attempts=3, last_at=1240.0, outcome=Outcome.GAVE_UP)
    assert act(sick(Reason.CRASH_LOOP), given_up, now=5000.0).kind == "none"


def test_node_not_ready_moves_pods():
    decision = act(sick(Reason.NODE_NOT_READY))
    assert decision.step == Step.MOVE_PODS


def test_waiting_for_gpus_is_left_alone_until_the_create_deadline():
    waiting = sick(Reason.WAITING_FOR_GPUS, status="CREATING")
    assert act(waiting).kind == "none"
    assert act(waiting, stuck=True).kind == "give_up"


def test_healthy_closes_an_open_episode_only():
    healthy = Diagnosis("RUNNING", 1, None, None, [])
    assert act(healthy).kind == "none"
    open_episode = RecoveryState(attempts=1, last_at=0.0, outcome=Outcome.ATTEMPTED)
    assert act(healthy, open_episode).kind == "close"
    assert act(healthy, RecoveryState(attempts=0, last_at=0.0, outcome=Outcome.RECOVERED)).kind == "none"


def test_give_up_reason_prefers_the_treated_cause_over_generic_no_progress():
    state = RecoveryState(attempts=3, reason="model_load_timeout", outcome=Outcome.ATTEMPTED)
    assert give_up_reason(sick(Reason.PROGRESS_DEADLINE_EXCEEDED), state) == "model_load_timeout"
    assert give_up_reason(sick(Reason.OOM_KILLED), state) == "oom_killed"
    assert give_up_reason(Diagnosis("CREATING", 0, None, None, []), RecoveryState()) == "create_deadline_exceeded"
