"""kubesim at scale: scheduling throughput, a paginated pod list, and memory.

    python bench/kubesim_scale.py                      # 1,000 nodes × 8 GPUs, 10,000 pods
    python bench/kubesim_scale.py --nodes 100 --pods 1000   # a quick run

It starts a SimCluster (virtual clock) with N `nvidia-h100-80gb:8` nodes, creates M/8 Deployments of
8 one-GPU replicas through the official client (pods beyond the N × 8 GPUs are CPU-only), and measures:

- pods scheduled per second: from the first Deployment POST until every pod is bound to a node, so the
  figure includes the API, the Deployment and ReplicaSet controllers and the scheduler — the path a
  real rollout takes (kube-scheduler's own CI gates at 100 and 400 pods/s);
- the time to list all pods page by page (`limit=500` + `continue`) through the official client, both
  as raw JSON (`_preload_content=False` + `json.loads`: the server and the wire) and as typed `V1Pod`
  models (what a service calling `list_pod_for_all_namespaces` waits for, dominated by the client's
  deserialisation). The lists run in a separate client process, as a real client does: in this process
  every full garbage collection triggered by the client's freshly parsed pods would also traverse the
  simulator's store and event log (over a million objects, ~0.5 s per collection), a cost no real
  client pays. The same raw list from inside this process is printed too, for reference;
- the process's resident memory (server, store and controllers share this process).

Each figure is printed with one comparison line against its goal (≥ 400 pods/s, full list < 2 s).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere: the repo root is the root

from kubernetes import client, config

from kubesim.cluster import SimCluster

GOAL_PODS_PER_SECOND = 400.0
GOAL_LIST_SECONDS = 2.0
REPLICAS_PER_DEPLOYMENT = 8
NAMESPACE = "bench"


def deployment_body(name: str, replicas: int, gpus: int) -> dict[str, Any]:
    labels = {"app": name, "bench": "kubesim-scale"}
    requests = {"cpu": "4", "memory": "32Gi", "nvidia.com/gpu": str(gpus)} if gpus else {"cpu": "1", "memory": "4Gi"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                    "containers": [{
                        "name": "vllm",
                        "image": "vllm/vllm-openai:v0.6.3",
                        "args": ["--model", "meta-llama/Llama-3.1-8B-Instruct"],
                        "resources": {"requests": requests, "limits": {"nvidia.com/gpu": str(gpus)} if gpus else {}},
                    }],
                },
            },
        },
    }


def rss_mib() -> tuple[float, float]:
    """(current, peak) resident set size of this process, MiB."""
    current = 0.0
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            current = int(line.split()[1]) / 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return current, peak


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def count_bound(cluster: SimCluster) -> tuple[int, int]:
    pods, _ = cluster.sim.store.list("pods", NAMESPACE)
    return sum(1 for p in pods if p["spec"].get("nodeName")), len(pods)


def list_all_pods(core: client.CoreV1Api, typed: bool) -> tuple[int, int, float]:
    """(pods, pages, seconds) for a full `limit=500` paginated list of pods in all namespaces."""
    start = time.perf_counter()
    token: str | None = None
    total = pages = 0
    while True:
        kwargs: dict[str, Any] = {"limit": 500}
        if token:
            kwargs["_continue"] = token
        if typed:
            page = core.list_pod_for_all_namespaces(**kwargs)
            total += len(page.items)
            token = page.metadata._continue
        else:
            response = core.list_pod_for_all_namespaces(_preload_content=False, **kwargs)
            body = json.loads(response.data)
            total += len(body["items"])
            token = body["metadata"].get("continue")
        pages += 1
        if not token:
            return total, pages, time.perf_counter() - start


def list_in_client_process(kubeconfig: Path, typed: bool) -> tuple[int, int, float]:
    """`list_all_pods` run by a fresh Python process (its import time is not measured)."""
    command = [sys.executable, str(Path(__file__).resolve()), "--list-only", str(kubeconfig)]
    if typed:
        command.append("--typed")
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    return figures["pods"], figures["pages"], figures["seconds"]


def list_only(kubeconfig: str, typed: bool) -> int:
    """The client side of `list_in_client_process`: one timed full list, as a JSON line on stdout."""
    api_client = config.new_client_from_config(config_file=kubeconfig)
    core = client.CoreV1Api(api_client)
    core.get_api_resources()  # open the connection and warm the client before timing
    pods, pages, seconds = list_all_pods(core, typed)
    print(json.dumps({"pods": pods, "pages": pages, "seconds": seconds}))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=1000, help="H100 nodes with 8 GPUs each (default 1000)")
    parser.add_argument("--pods", type=int, default=10000, help="one-GPU pods, in Deployments of 8 (default 10000)")
    parser.add_argument("--quick", action="store_true", help="shorthand for --nodes 100 --pods 1000")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=600.0, help="give up waiting for binding after this")
    parser.add_argument("--list-only", metavar="KUBECONFIG", help=argparse.SUPPRESS)  # the client process
    parser.add_argument("--typed", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.list_only:
        return list_only(args.list_only, args.typed)
    if args.quick:
        args.nodes, args.pods = 100, 1000
    if args.nodes <= 0 or args.pods <= 0:
        parser.error("--nodes and --pods must be positive")
    # Every GPU gets a one-GPU pod; pods beyond the GPUs (10,000 pods on 8,000 GPUs) are CPU-only
    # companions (routers, tokenizers), so the cluster ends exactly full and nothing stays Pending.
    gpu_pods = min(args.pods, args.nodes * 8)
    plan = [(REPLICAS_PER_DEPLOYMENT, 1)] * (gpu_pods // REPLICAS_PER_DEPLOYMENT)
    if gpu_pods % REPLICAS_PER_DEPLOYMENT:
        plan.append((gpu_pods % REPLICAS_PER_DEPLOYMENT, 1))
    cpu_pods = args.pods - gpu_pods
    plan += [(REPLICAS_PER_DEPLOYMENT, 0)] * (cpu_pods // REPLICAS_PER_DEPLOYMENT)
    if cpu_pods % REPLICAS_PER_DEPLOYMENT:
        plan.append((cpu_pods % REPLICAS_PER_DEPLOYMENT, 0))
    deployments = len(plan)

    print(f"kubesim scale bench: {args.nodes} nodes × 8 GPUs, {args.pods} pods ({gpu_pods} with one GPU, "
          f"{cpu_pods} CPU-only) in {deployments} deployments of ≤{REPLICAS_PER_DEPLOYMENT}, seed {args.seed}")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch, \
            SimCluster(nodes=f"{args.nodes}xnvidia-h100-80gb:8", seed=args.seed) as cluster:
        print(f"  cluster up in {time.perf_counter() - started:.2f} s at {cluster.url}")
        kubeconfig = cluster.write_kubeconfig(Path(scratch) / "kubeconfig")
        api_client = config.new_client_from_config(config_file=str(kubeconfig))
        core, apps = client.CoreV1Api(api_client), client.AppsV1Api(api_client)
        core.create_namespace({"metadata": {"name": NAMESPACE}})

        t0 = time.perf_counter()
        for index, (replicas, gpus) in enumerate(plan):
            apps.create_namespaced_deployment(NAMESPACE, deployment_body(f"model-{index:05d}", replicas, gpus))
        posted = time.perf_counter() - t0
        bound_when_posted, _ = count_bound(cluster)
        bound = total = 0
        while time.perf_counter() - t0 < args.timeout:
            bound, total = count_bound(cluster)
            if bound >= args.pods:
                break
            time.sleep(0.05)
        elapsed = time.perf_counter() - t0
        rate = bound / elapsed
        print(f"  {deployments} deployments POSTed in {posted:.2f} s ({posted / deployments * 1000:.1f} ms each), "
              f"{bound_when_posted} pods bound by then; {bound}/{args.pods} bound ({total} created) after "
              f"{elapsed:.2f} s")
        if bound_when_posted < bound and elapsed > posted:
            print(f"  after the last POST: {(bound - bound_when_posted) / (elapsed - posted):.1f} pods/s bound")

        # Let the controllers finish reacting to the bindings (kubelet stages, events) so the list timing
        # measures the API, not a race with a busy controller thread for the GIL.
        settle_started = time.perf_counter()
        cluster.settle(timeout=args.timeout)
        print(f"  controllers settled {time.perf_counter() - settle_started:.2f} s later")
        raw_pods, pages, raw_seconds = list_in_client_process(kubeconfig, typed=False)
        typed_pods, _, typed_seconds = list_in_client_process(kubeconfig, typed=True)
        _, _, in_process_seconds = list_all_pods(core, typed=False)
        current, peak = rss_mib()

    complete = bound >= args.pods
    print()
    print(f"pods scheduled per second : {rate:8.1f} pods/s   goal >= {GOAL_PODS_PER_SECOND:.0f}   "
          f"{verdict(complete and rate >= GOAL_PODS_PER_SECOND)}")
    print(f"full pod list, raw JSON   : {raw_seconds:8.2f} s        goal <  {GOAL_LIST_SECONDS:.0f} s   "
          f"{verdict(raw_seconds < GOAL_LIST_SECONDS)}   ({raw_pods} pods, {pages} pages of 500)")
    print(f"full pod list, V1Pod typed: {typed_seconds:8.2f} s        goal <  {GOAL_LIST_SECONDS:.0f} s   "
          f"{verdict(typed_seconds < GOAL_LIST_SECONDS)}   ({typed_pods} pods; the client's V1Pod deserialisation "
          "included: reported, the goal is for the raw pages)")
    print(f"  (the raw list again from inside the simulator's process: {in_process_seconds:.2f} s — its full "
          "garbage collections also walk the store)")
    print(f"process memory (RSS)      : {current:8.0f} MiB      peak {peak:.0f} MiB (no goal; server, store and "
          "controllers in one process)")
    return 0 if complete else 1


if __name__ == "__main__":
    sys.exit(main())
