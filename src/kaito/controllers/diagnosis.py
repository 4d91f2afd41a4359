"""Why something is not ready yet, in words a user can act on.

Upstream's most common complaint is a Workspace stuck at "not ready" with no hint; these
pure functions turn pod, node and NodeClaim state into a reason and a specific message.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from kaito.api.constants import Reason

MESSAGE_LIMIT = 512
CLAIM_LIFECYCLE = ("Launched", "Registered", "Initialized", "Ready")
_IMAGE_PULL = frozenset({"ErrImagePull", "ImagePullBackOff", "InvalidImageName"})
_START_ERRORS = frozenset(
    {"CreateContainerConfigError", "CreateContainerError", "RunContainerError"}
)


@dataclass(frozen=True)
class Diagnosis:
    reason: str
    message: str


def _trim(text: str) -> str:
    return text if len(text) <= MESSAGE_LIMIT else text[: MESSAGE_LIMIT - 1] + "…"


def condition_of(obj: Mapping[str, Any], type_: str) -> Mapping[str, Any] | None:
    for cond in (obj.get("status") or {}).get("conditions") or ():
        if cond.get("type") == type_:
            return dict(cond)
    return None


def transition_time(obj: Mapping[str, Any], type_: str) -> dt.datetime | None:
    """When the condition ``type_`` last changed status (None: absent or unreadable)."""
    cond = condition_of(obj, type_)
    return timestamp(cond.get("lastTransitionTime") if cond else None)


def timestamp(value: Any) -> dt.datetime | None:
    """An RFC 3339 time of the API (``...Z``); None when absent or unreadable."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def is_true(obj: Mapping[str, Any], type_: str) -> bool:
    cond = condition_of(obj, type_)
    return cond is not None and cond.get("status") == "True"


def pod_problem(pod: Mapping[str, Any]) -> Diagnosis | None:
    """The most telling problem of one pod, or None when it looks healthy or merely young."""
    name = (pod.get("metadata") or {}).get("name", "?")
    status = pod.get("status") or {}
    if status.get("reason") == "Evicted":
        return Diagnosis(
            Reason.POD_EVICTED, _trim(f"pod {name} was evicted: {status.get('message', '')}")
        )
    scheduled = condition_of(pod, "PodScheduled")
    if (
        scheduled
        and scheduled.get("status") == "False"
        and scheduled.get("reason") == "Unschedulable"
    ):
        return Diagnosis(
            Reason.UNSCHEDULABLE,
            _trim(f"pod {name} cannot be scheduled: {scheduled.get('message', '')}"),
        )
    statuses = [
        *(status.get("initContainerStatuses") or ()),
        *(status.get("containerStatuses") or ()),
    ]
    for cs in statuses:
        container = cs.get("name", "?")
        waiting = (cs.get("state") or {}).get("waiting") or {}
        reason = waiting.get("reason", "")
        detail = waiting.get("message", "")
        if reason in _IMAGE_PULL:
            return Diagnosis(
                Reason.IMAGE_PULL_ERROR,
                _trim(
                    f"pod {name} container {container} cannot pull its image ({reason}): {detail}"
                ),
            )
        last = (cs.get("lastState") or {}).get("terminated") or {}
        term = (cs.get("state") or {}).get("terminated") or {}
        if "OOMKilled" in (last.get("reason"), term.get("reason")):
            return Diagnosis(
                Reason.CONTAINER_OOM_KILLED,
                _trim(
                    f"pod {name} container {container} ran out of memory (OOMKilled); "
                    "choose a larger instance type or lower max-model-len"
                ),
            )
        # between restarts the kubelet shows the failed run itself (terminated) or the
        # back-off before the next one (waiting: CrashLoopBackOff, the failed run in lastState)
        # ...or, running again, not ready yet after a failed run (a slow start hides the loop)
        restarted = cs.get("restartCount", 0) > 0 and not cs.get("ready") and last.get("exitCode")
        if term.get("exitCode") or reason == "CrashLoopBackOff" or restarted:
            failed = term if term.get("exitCode") else last
            said = (failed.get("message") or "").strip()
            why = f": {said}" if said else ""
            return Diagnosis(
                Reason.CONTAINER_CRASH_LOOP_BACK_OFF,
                _trim(
                    f"pod {name} container {container} keeps crashing "
                    f"(exit code {failed.get('exitCode')}){why}; "
                    f"see `kubectl logs {name} -c {container} --previous`"
                ),
            )
        if reason in _START_ERRORS:
            return Diagnosis(
                Reason.CONTAINER_START_ERROR,
                _trim(f"pod {name} container {container} cannot start ({reason}): {detail}"),
            )
    return None


def pods_problem(pods: Iterable[Mapping[str, Any]]) -> Diagnosis | None:
    for pod in pods:
        found = pod_problem(pod)
        if found is not None:
            return found
    return None


def claim_problem(claim: Mapping[str, Any]) -> Diagnosis:
    """Why a NodeClaim is not Ready: its first lifecycle condition that is not True."""
    name = (claim.get("metadata") or {}).get("name", "?")
    for type_ in CLAIM_LIFECYCLE:
        cond = condition_of(claim, type_)
        if cond is None:
            continue
        if cond.get("status") != "True":
            reason = cond.get("reason") or f"{type_}False"
            return Diagnosis(reason, _trim(f"NodeClaim {name}: {cond.get('message') or reason}"))
    return Diagnosis(Reason.NODE_CLAIM_NOT_READY, f"NodeClaim {name} is being provisioned")


def node_problem(
    node: Mapping[str, Any] | None, name: str, gpus: int, resource: str = "nvidia.com/gpu"
) -> Diagnosis | None:
    """None when the node is Ready with `gpus` allocatable `resource` (GPUs or MIG slices)."""
    if node is None:
        return Diagnosis(Reason.NODE_NOT_READY, f"node {name} has not joined the cluster yet")
    if not is_true(node, "Ready"):
        return Diagnosis(Reason.NODE_NOT_READY, f"node {name} is not Ready")
    allocatable = (node.get("status") or {}).get("allocatable") or {}
    have = whole_quantity(allocatable.get(resource, "0"))
    if have < gpus:
        return Diagnosis(
            Reason.NODE_PLUGINS_NOT_READY,
            f"node {name} offers {have} {resource}, {gpus} needed: "
            "is the NVIDIA device plugin running?",
        )
    return None


_SUFFIXES = {
    "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
}  # fmt: skip


def whole_quantity(value: object) -> int:
    """A Kubernetes quantity ("2", "1k", "500m", 4) as a whole number; 0 when unreadable.

    Nodes are written by others (kubelets, device plugins, people): a value this code does
    not expect must read as "none", never stop the reconcile.
    """
    text = str(value).strip()
    scale: float
    for suffix in sorted(_SUFFIXES, key=len, reverse=True):
        if text.endswith(suffix):
            number, scale = text[: -len(suffix)], _SUFFIXES[suffix]
            break
    else:
        number, scale = (text[:-1], 0.001) if text.endswith("m") else (text, 1)
    try:
        return max(0, int(float(number) * scale))
    except ValueError:
        return 0
