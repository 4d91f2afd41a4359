"""What a tuning Job's state means for the Workspace (no cluster: a stand-in cache)."""

from __future__ import annotations

from typing import Any, cast

from kaito.api import WorkspaceBase, parse_workspace
from kaito.controllers.common import Facts, WorkspaceSettings
from kaito.controllers.tuning_run import TuningRun
from kaito.runtime.objects import KObject


class PodsOnly:
    def __init__(self, pods: list[dict[str, Any]]) -> None:
        self.pods = pods

    def list(self, gvk: object, **_: object) -> list[KObject]:
        return [KObject(p) for p in self.pods]


WS = parse_workspace(
    {
        "apiVersion": "kaito.sh/v1beta1",
        "kind": "Workspace",
        "metadata": {"name": "tune", "namespace": "ns"},
        "resource": {"instanceType": "Standard_NC6s_v3", "labelSelector": {}},
        "tuning": {
            "preset": {"name": "phi-3-mini-4k-instruct"},
            "method": "qlora",
            "input": {"urls": ["https://example.invalid/d.parquet"]},
            "output": {"image": "reg.example/a:1", "imagePushSecret": "push"},
        },
    }
)


def run(pods: list[dict[str, Any]]) -> TuningRun:
    return TuningRun(
        cast(Any, None),
        cast(Any, PodsOnly(pods)),
        cast(Any, None),
        WorkspaceSettings(),
        cast(Any, None),
    )


def status_of(job: dict[str, Any], pods: list[dict[str, Any]] | None = None) -> Facts:
    facts = Facts()
    run(pods or []).status_from_job(cast(WorkspaceBase, WS), job, facts)
    return facts


def test_a_failed_stage_names_itself_and_its_reason() -> None:
    job = {"status": {"failed": 1, "conditions": [{"type": "Failed", "status": "True"}]}}
    pod = {
        "status": {
            "initContainerStatuses": [
                {"name": "data-downloader", "state": {"terminated": {"exitCode": 0}}},
                {
                    "name": "trainer",
                    "state": {
                        "terminated": {
                            "exitCode": 2,
                            "message": "column 'messages' not found in train.parquet",
                        }
                    },
                },
            ]
        }
    }
    facts = status_of(job, [pod])
    status, reason, message = facts.conditions["JobStarted"]
    assert (status, reason) == ("False", "WorkspaceTuningJobStatusFailed")
    assert "trainer failed (exit code 2)" in message and "column 'messages'" in message
    assert facts.conditions["WorkspaceSucceeded"][:2] == ("False", "workspaceFailed")
    assert facts.state == "Failed"


def test_complete_running_and_pending_jobs() -> None:
    done = status_of({"status": {"conditions": [{"type": "Complete", "status": "True"}]}})
    assert done.state == "Succeeded" and done.conditions["WorkspaceSucceeded"][0] == "True"
    running = status_of({"status": {"active": 1}})
    assert running.state == "Running" and running.conditions["JobStarted"][0] == "True"
    pending = status_of({"status": {}})
    assert pending.state is None
    assert pending.conditions["JobStarted"][:2] == ("False", "WorkspaceTuningJobStatusPending")
