"""The HPA an InferenceSet's scaledobject.kaito.sh annotations ask for, and their errors."""

from __future__ import annotations

import pytest

from kaito.controllers import autoscaler

UPSTREAM = {
    "scaledobject.kaito.sh/auto-provision": "true",
    "scaledobject.kaito.sh/metricName": "vllm:num_requests_waiting",
    "scaledobject.kaito.sh/threshold": "10",
}
OWNER = {"apiVersion": "kaito.sh/v1beta1", "kind": "InferenceSet", "name": "s", "uid": "u"}


def test_upstream_example_annotations_make_a_pods_metric_hpa() -> None:
    settings = autoscaler.parse(UPSTREAM, limit_replicas=5)
    hpa = autoscaler.hpa("s", "ns", OWNER, settings)
    spec = hpa["spec"]
    assert spec["scaleTargetRef"] == {
        "apiVersion": "kaito.sh/v1beta1",
        "kind": "InferenceSet",
        "name": "s",
    }
    assert (spec["minReplicas"], spec["maxReplicas"]) == (1, 5)  # nodeCountLimit bounds it
    assert spec["metrics"] == [
        {
            "type": "Pods",
            "pods": {
                "metric": {"name": "vllm:num_requests_waiting"},
                "target": {"type": "AverageValue", "averageValue": "10"},
            },
        }
    ]
    assert spec["behavior"]["scaleUp"]["stabilizationWindowSeconds"] == 60
    assert spec["behavior"]["scaleDown"]["policies"] == [
        {"type": "Pods", "value": 1, "periodSeconds": 300}
    ]
    assert hpa["metadata"]["ownerReferences"] == [OWNER]
    assert hpa["metadata"]["annotations"] == {
        "scaledobject.kaito.sh/managed-by": "kaito-inferenceset"
    }


def test_defaults_and_overrides() -> None:
    settings = autoscaler.parse(
        {
            **UPSTREAM,
            "scaledobject.kaito.sh/metricName": "vllm:kv_cache_usage_perc",
            "scaledobject.kaito.sh/threshold": "0.8",
            "scaledobject.kaito.sh/max-replicas": "3",
            "scaledobject.kaito.sh/evaluationwindow": "0",
            "scaledobject.kaito.sh/scaleupcooldown": "5",
            "scaledobject.kaito.sh/scaledowncooldown": "10",
        },
        limit_replicas=None,
    )
    assert settings.metric == "vllm:kv_cache_usage_perc"
    assert (settings.max_replicas, settings.evaluation_window_s) == (3, 0)
    assert (settings.scale_up_cooldown_s, settings.scale_down_cooldown_s) == (5, 10)
    assert autoscaler.parse(UPSTREAM, limit_replicas=None).max_replicas == 10
    no_metric = {k: v for k, v in UPSTREAM.items() if "metricName" not in k}
    assert autoscaler.parse(no_metric, limit_replicas=None).metric == "vllm:num_requests_waiting"


def test_min_replicas_zero_keeps_the_hpa_at_one() -> None:
    settings = autoscaler.parse(
        {**UPSTREAM, "scaledobject.kaito.sh/min-replicas": "0"}, limit_replicas=None
    )
    assert settings.to_zero
    assert autoscaler.hpa("s", "ns", OWNER, settings)["spec"]["minReplicas"] == 1
    assert "scale to zero" in autoscaler.describe(settings)


@pytest.mark.parametrize(
    ("override", "names"),
    [
        ({"scaledobject.kaito.sh/threshold": ""}, "threshold]: is required"),
        ({"scaledobject.kaito.sh/threshold": "ten"}, "threshold]: 'ten' is not a positive"),
        ({"scaledobject.kaito.sh/threshold": "0"}, "not a positive number"),
        ({"scaledobject.kaito.sh/metricName": "vllm num"}, "metricName]"),
        ({"scaledobject.kaito.sh/max-replicas": "many"}, "max-replicas]: 'many' is not a whole"),
        ({"scaledobject.kaito.sh/max-replicas": "0"}, "out of range"),
        (
            {"scaledobject.kaito.sh/min-replicas": "4", "scaledobject.kaito.sh/max-replicas": "2"},
            "below min-replicas",
        ),
        ({"scaledobject.kaito.sh/scaleupcooldown": "0"}, "scaleupcooldown]: 0 is out of range"),
    ],
)
def test_bad_annotations_name_the_annotation_and_the_fix(
    override: dict[str, str], names: str
) -> None:
    with pytest.raises(
        autoscaler.AnnotationError, match=names.replace("[", r"\[").replace("]", r"\]")
    ):
        autoscaler.parse({**UPSTREAM, **override}, limit_replicas=None)


def test_enabled_only_with_true() -> None:
    assert autoscaler.enabled(UPSTREAM)
    assert autoscaler.enabled({"scaledobject.kaito.sh/auto-provision": "True"})
    assert not autoscaler.enabled({"scaledobject.kaito.sh/auto-provision": "false"})
    assert not autoscaler.enabled({})


def test_hpa_problem_reads_the_hpa_conditions() -> None:
    failing = {
        "status": {
            "conditions": [
                {"type": "AbleToScale", "status": "True", "reason": "SucceededGetScale"},
                {
                    "type": "ScalingActive",
                    "status": "False",
                    "reason": "FailedGetPodsMetric",
                    "message": "no custom metrics API (custom.metrics.k8s.io) registered",
                },
            ]
        }
    }
    assert autoscaler.hpa_problem(failing) == (
        "FailedGetPodsMetric",
        "no custom metrics API (custom.metrics.k8s.io) registered",
    )
    disabled = {
        "status": {
            "conditions": [
                {"type": "ScalingActive", "status": "False", "reason": "ScalingDisabled"}
            ]
        }
    }
    assert autoscaler.hpa_problem(disabled) is None
    assert autoscaler.hpa_problem({}) is None
