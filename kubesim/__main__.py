"""`python -m kubesim --port PORT --nodes SPEC --kubeconfig FILE [--speed X] [--seed N] [--virtual] [--state FILE]`.

Serves a simulated GPU cluster until SIGTERM/SIGINT (exit code 0). Once it is listening it writes the
kubeconfig and prints one flushed line, `kubesim ready: URL kubeconfig=PATH`, for scripts to wait on.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import signal
import sys
import threading
from pathlib import Path
from types import FrameType

from kubesim.cluster import SimCluster
from kubesim.nodes import parse_spec


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m kubesim", description="Serve a simulated GPU Kubernetes cluster.")
    parser.add_argument("--port", type=int, default=6443, help="port to listen on (0 picks a free one)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    parser.add_argument("--nodes", default="4xnvidia-l40s:8,2xnvidia-h100-80gb:8",
                        help="node pools, COUNTxPRODUCT:GPUS[,...]")
    parser.add_argument("--kubeconfig", required=True, help="where to write the kubeconfig")
    parser.add_argument("--speed", type=float, default=1.0, help="simulated seconds per real second")
    parser.add_argument("--seed", type=int, default=0, help="seed for names, uids and stage jitter")
    parser.add_argument("--virtual", action="store_true",
                        help="virtual clock: time moves only through POST /_sim/clock/advance")
    parser.add_argument("--state", metavar="FILE",
                        help="keep the cluster in FILE: restored at start, saved every 10 s and at exit")
    parser.add_argument("--with-daemonsets", action="store_true",
                        help="run an NVIDIA device-plugin DaemonSet pod on every GPU node")
    args = parser.parse_args(argv)
    try:
        parse_spec(args.nodes)
    except ValueError as exc:
        parser.error(f"--nodes: {exc}")
    if args.speed <= 0:
        parser.error("--speed must be positive")
    if not 0 <= args.port <= 65535:
        parser.error("--port must be between 0 and 65535")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    stop = threading.Event()

    def request_stop(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    cluster = SimCluster(nodes=args.nodes, seed=args.seed, virtual_clock=args.virtual, speed=args.speed,
                         host=args.host, port=args.port, with_daemonsets=args.with_daemonsets)
    try:
        cluster.start()
    except OSError as exc:
        sys.stderr.write(f"kubesim: cannot listen on {args.host}:{args.port}: {exc}\n")
        return 1
    state = StateFile(Path(args.state)) if args.state else None
    try:
        if state is not None:
            state.restore_into(cluster)
        # The store holds hundreds of thousands of long-lived dicts; keeping them out of the cyclic
        # collector's full passes removes the pauses that otherwise stall list requests.
        gc.freeze()
        path = cluster.write_kubeconfig(args.kubeconfig)
        sys.stdout.write(f"kubesim ready: {cluster.url} kubeconfig={path}\n")
        sys.stdout.flush()
        while not stop.wait(STATE_SAVE_SECONDS if state is not None else 0.5):
            if state is not None:
                state.save(cluster)
    finally:
        if state is not None:
            state.save(cluster)
        cluster.stop()
    return 0


STATE_SAVE_SECONDS = 10.0


class StateFile:
    """The cluster's objects on disk, so a restarted simulator serves what the service last saw.

    Saved periodically as well as at exit, so a killed simulator loses at most a few seconds.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def restore_into(self, cluster: SimCluster) -> None:
        if not self.path.exists():
            return
        try:
            snapshot = json.loads(self.path.read_text())
            clock = snapshot.get("clock")
            if clock and hasattr(cluster.sim.clock, "advance_to"):
                cluster.sim.clock.advance_to(float(clock))
            cluster.sim.restore(snapshot)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            sys.stderr.write(f"kubesim: ignoring unreadable state file {self.path}: {exc}\n")

    def save(self, cluster: SimCluster) -> None:
        partial = self.path.with_suffix(self.path.suffix + ".partial")
        partial.write_text(json.dumps(cluster.sim.snapshot()))
        os.replace(partial, self.path)


if __name__ == "__main__":
    sys.exit(main())
