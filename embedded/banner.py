"""The banner printed once the embedded run is up: where everything is and how to start using it.

The token lines are ``export NAME=value`` so a user can paste them into a shell, and so that a script
(the end-to-end test) can read them with one regular expression.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class BannerInfo:
    """What the banner shows; ``None`` for a piece means it is external (the user's own server)."""

    data_dir: Path
    api_url: str
    flower_url: str
    internal_token: str
    admin_token: str
    tenant: str
    database_url: str
    database_embedded: bool
    redis_url: str
    redis_embedded: bool
    kubesim_url: str | None
    kubesim_nodes: str | None
    kubesim_speed: float | None
    kubeconfig: Path | None
    k8s_context: str | None
    log_dir: Path


def _redact(url: str) -> str:
    """Hide a password in a URL the user passed in, the banner may end up in a screen share."""
    scheme, separator, rest = url.partition("://")
    if not separator or "@" not in rest:
        return url
    credentials, _, host_part = rest.rpartition("@")
    user = credentials.split(":", 1)[0]
    hidden = ":***" if ":" in credentials else ""
    return f"{scheme}://{user}{hidden}@{host_part}"


def _origin(embedded: bool) -> str:
    return "(embedded)" if embedded else "(external)"


def render_banner(info: BannerInfo) -> str:
    """The banner text (no trailing newline)."""
    rule = "=" * 100
    kubeconfig_arg = shlex.quote(str(info.kubeconfig)) if info.kubeconfig else None
    lines = [
        rule,
        f" Orchestration service is running (embedded run, data in {info.data_dir})",
        rule,
        f" API          {info.api_url}",
        f" Swagger UI   {info.api_url}/docs",
        f" Health       {info.api_url}/health   (readiness: {info.api_url}/health/ready)",
        f" Flower       {info.flower_url}",
    ]
    if info.kubesim_url is not None:
        lines.append(
            f" kubesim      {info.kubesim_url}   "
            f"(simulated GPU cluster {info.kubesim_nodes}, clock ×{info.kubesim_speed:g})"
        )
    else:
        context = info.k8s_context or "current context"
        lines.append(f" Kubernetes   external cluster ({context})")
    lines += [
        f" Postgres     {_redact(info.database_url)}   {_origin(info.database_embedded)}",
        f" Redis        {_redact(info.redis_url)}   {_origin(info.redis_embedded)}",
        f" Logs         {info.log_dir}/<name>.log   (postgres, redis, kubesim, api, worker, beat, flower)",
        "",
    ]
    if info.kubeconfig is not None:
        lines += [
            f" kubeconfig   {info.kubeconfig}",
            f"   kubectl --kubeconfig {kubeconfig_arg} get nodes",
            f"   kubectl --kubeconfig {kubeconfig_arg} get pods -A -o wide",
        ]
    if info.kubesim_url is not None:
        lines += [
            " The simulated cluster is saved to the data directory (kubesim-state.json) every 10 s and at exit,",
            " so a restart serves the same nodes, deployments and pods, like Postgres and Redis keep theirs.",
        ]
    lines += [
        "",
        " Tokens (valid 7 days). Paste these into your shell:",
        f"   export TOKEN={info.internal_token}",
        f"   export ADMIN_TOKEN={info.admin_token}",
        f" TOKEN has scope 'internal' for tenant '{info.tenant}'; ADMIN_TOKEN has scope 'admin'. Mint more with:",
        f"   JWT_SECRET=$(cat {shlex.quote(str(info.data_dir / 'secret'))}) "
        ".venv/bin/python -m web.tokens --tenant acme --scope internal",
        "",
        " Try it:",
        f"   curl -s -X POST {info.api_url}/internal/deployments/create \\",
        '     -H "Authorization: Bearer $TOKEN" -H "Content-Type: application/json" \\',
        """     -d '{"model_id": "Qwen/Qwen2.5-7B-Instruct", "replicas": 1, "gpus_per_replica": 1}'""",
        f'   curl -s {info.api_url}/internal/deployments -H "Authorization: Bearer $TOKEN"',
        f'   curl -s {info.api_url}/internal/resources/available -H "Authorization: Bearer $TOKEN"',
        "",
        " Ctrl-C stops everything; the data directory keeps Postgres and Redis data for the next run.",
        rule,
    ]
    return "\n".join(lines)
