"""Turning pod, node and claim state into reasons a user can act on."""

from __future__ import annotations

from typing import Any

from kaito.controllers import diagnosis as d
from kaito.controllers.machine import claim_conditions, node_request
from kaito.provisioner.base import NodeStatus, Phase


def pod(**status: Any) -> dict[str, Any]:
    return {"metadata": {"name": "ws-0"}, "status": status}


def waiting(reason: str, message: str = "") -> dict[str, Any]:
    return {"name": "main", "state": {"waiting": {"reason": reason, "message": message}}}


def test_image_pull_failures_name_the_container() -> None:
    found = d.pod_problem(pod(initContainerStatuses=[waiting("ImagePullBackOff", "401")]))
    assert found is not None
    assert found.reason == "ImagePullError"
    assert "container main" in found.message and "401" in found.message


def test_crash_loop_points_at_the_logs() -> None:
    cs = waiting("CrashLoopBackOff") | {"lastState": {"terminated": {"exitCode": 3}}}
    found = d.pod_problem(pod(containerStatuses=[cs]))
    assert found is not None and found.reason == "ContainerCrashLoopBackOff"
    assert "exit code 3" in found.message and "kubectl logs ws-0" in found.message


def test_oom_is_reported_before_the_crash_loop() -> None:
    cs = waiting("CrashLoopBackOff") | {"lastState": {"terminated": {"reason": "OOMKilled"}}}
    found = d.pod_problem(pod(containerStatuses=[cs]))
    assert found is not None and found.reason == "ContainerOOMKilled"


def test_unschedulable_and_evicted() -> None:
    cond = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/3"}
    found = d.pod_problem(pod(conditions=[cond]))
    assert found is not None and found.reason == "Unschedulable" and "0/3" in found.message
    evicted = d.pod_problem(pod(reason="Evicted", message="disk"))
    assert evicted is not None and evicted.reason == "PodEvicted"


def test_healthy_or_young_pods_have_no_problem() -> None:
    assert d.pod_problem(pod(containerStatuses=[waiting("ContainerCreating")])) is None
    assert d.pods_problem([pod(), pod()]) is None


def test_claim_problem_copies_the_first_failing_lifecycle_condition() -> None:
    claim = {
        "metadata": {"name": "ws1"},
        "status": {
            "conditions": [
                {"type": "Launched", "status": "False", "reason": "QuotaExceeded", "message": "q"},
                {"type": "Registered", "status": "Unknown", "reason": "AwaitingLaunch"},
            ]
        },
    }
    found = d.claim_problem(claim)
    assert found.reason == "QuotaExceeded" and "q" in found.message


def test_node_problem_checks_readiness_and_gpus() -> None:
    assert d.node_problem(None, "n", 1) is not None
    ready = {"status": {"conditions": [{"type": "Ready", "status": "True"}]}}
    no_gpu = d.node_problem(ready, "n", 1)
    assert no_gpu is not None and no_gpu.reason == "NodePluginsNotReady"
    gpu = {"status": ready["status"] | {"allocatable": {"nvidia.com/gpu": "2"}}}
    assert d.node_problem(gpu, "n", 2) is None


def test_node_request_reads_the_claim() -> None:
    claim = {
        "metadata": {
            "name": "ws123",
            "labels": {"kaito.sh/workspace": "w", "kaito.sh/workspacenamespace": "ns"},
            "annotations": {"kaito.sh/node-image-family": "azurelinux"},
        },
        "spec": {
            "requirements": [
                {"key": "node.kubernetes.io/instance-type", "operator": "In", "values": ["X"]}
            ],
            "taints": [{"key": "sku", "value": "gpu", "effect": "NoSchedule"}],
            "resources": {"requests": {"storage": "512Gi"}},
        },
    }
    req = node_request(claim)
    assert req.instance_type == "X" and req.storage_gib == 512
    assert req.labels["kaito.sh/nodeclaim"] == "ws123"
    assert req.owner == {"workspace": "w", "namespace": "ns"}
    assert req.node_image_family == "azurelinux"
    assert req.taints[0].key == "sku"


def test_claim_conditions_walk_the_lifecycle() -> None:
    launched = NodeStatus(Phase.LAUNCHED, provider_id="p", node_name="n")
    node = {
        "metadata": {"name": "n"},
        "status": {
            "conditions": [{"type": "Ready", "status": "True"}],
            "allocatable": {"nvidia.com/gpu": "1"},
        },
    }
    by_type = {c["type"]: c for c in claim_conditions([], launched, node, 1)}
    assert [by_type[t]["status"] for t in d.CLAIM_LIFECYCLE] == ["True"] * 4
    waiting_node = {c["type"]: c["status"] for c in claim_conditions([], launched, None, 1)}
    assert waiting_node == {
        "Launched": "True",
        "Registered": "Unknown",
        "Initialized": "Unknown",
        "Ready": "Unknown",
    }
    failed = NodeStatus(Phase.FAILED, reason="QuotaExceeded", message="no quota")
    conds = {c["type"]: c for c in claim_conditions([], failed, None, 1)}
    assert conds["Launched"]["status"] == "False"
    assert conds["Ready"]["reason"] == "QuotaExceeded"


def test_transition_time_is_kept_while_status_is_unchanged() -> None:
    launched = NodeStatus(Phase.LAUNCHED)
    first = claim_conditions([], launched, None, 0)
    old = [c | {"lastTransitionTime": "2020-01-01T00:00:00Z"} for c in first]
    again = claim_conditions(old, launched, None, 0)
    assert all(c["lastTransitionTime"] == "2020-01-01T00:00:00Z" for c in again)


def test_crash_loop_carries_the_termination_message() -> None:
    cs = waiting("CrashLoopBackOff") | {
        "name": "model-weights-downloader",
        "lastState": {"terminated": {"exitCode": 2, "message": "registry refused the credentials"}},
    }
    found = d.pod_problem(pod(initContainerStatuses=[cs]))
    assert found is not None
    assert "model-weights-downloader" in found.message
    assert "registry refused the credentials" in found.message


def test_a_failed_run_between_restarts_is_a_crash_with_its_message() -> None:
    # the kubelet shows the failed run itself until the back-off starts (kubectl: Init:Error)
    cs = {
        "name": "model-weights-downloader",
        "state": {"terminated": {"exitCode": 1, "reason": "Error", "message": "401 Unauthorized"}},
        "lastState": {},
    }
    found = d.pod_problem(pod(initContainerStatuses=[cs]))
    assert found is not None and found.reason == "ContainerCrashLoopBackOff"
    assert "model-weights-downloader" in found.message and "401 Unauthorized" in found.message
    done = {"name": "ok", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}
    assert d.pod_problem(pod(initContainerStatuses=[done])) is None


def test_an_oom_kill_shows_while_the_container_is_still_terminated() -> None:
    cs = {"name": "main", "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}
    found = d.pod_problem(pod(containerStatuses=[cs]))
    assert found is not None and found.reason == "ContainerOOMKilled"


def test_a_container_running_again_after_a_failed_run_is_a_crash() -> None:
    cs = {
        "name": "main",
        "ready": False,
        "restartCount": 1,
        "state": {"running": {}},
        "lastState": {"terminated": {"exitCode": 2, "message": "no config.json"}},
    }
    found = d.pod_problem(pod(containerStatuses=[cs]))
    assert found is not None and "no config.json" in found.message
    assert d.pod_problem(pod(containerStatuses=[cs | {"ready": True}])) is None


def test_gpu_quantities_written_by_others_never_stop_a_reconcile() -> None:
    """Found by the chaos suite: a node offering "1k" GPUs made node_problem raise."""

    def node(gpus: object) -> dict[str, Any]:
        ready = {"type": "Ready", "status": "True"}
        return {"status": {"conditions": [ready], "allocatable": {"nvidia.com/gpu": gpus}}}

    assert d.node_problem(node("1k"), "n", 2) is None
    assert d.node_problem(node(4), "n", 2) is None
    for odd in ("500m", "lots", "", "-1"):
        found = d.node_problem(node(odd), "n", 1)
        assert found is not None and found.reason == "NodePluginsNotReady", odd


def test_pending_launch_shows_the_backends_words() -> None:
    pending = NodeStatus(
        Phase.PENDING, reason="Creating", message="AKS agent pool p is being created"
    )
    launched = {c["type"]: c for c in claim_conditions([], pending, None, 1)}["Launched"]
    assert (launched["reason"], launched["message"]) == ("Creating", pending.message)
    generic = {c["type"]: c for c in claim_conditions([], None, None, 1)}["Launched"]
    assert generic["reason"] == "Launching"
