"""The HorizontalPodAutoscaler an InferenceSet asks for with its scaledobject.kaito.sh annotations.

Upstream's keda-kaito-scaler reads the same annotations and makes a KEDA ScaledObject; here the
operator makes a plain ``autoscaling/v2`` HorizontalPodAutoscaler, so the controller-manager's
own autoscaler drives the set through its scale subresource.  The metric is a ``Pods`` metric
(the average over the replicas' pods, selected by ``.status.selector``), served by any
custom.metrics.k8s.io adapter over Prometheus' scrape of vLLM (see docs/inferenceset.md):

==========================================  ==========================================  ========
annotation                                  meaning                                     default
==========================================  ==========================================  ========
``scaledobject.kaito.sh/auto-provision``    ``"true"`` makes the operator own an HPA    off
``scaledobject.kaito.sh/metricName``        a vLLM gauge, e.g. ``vllm:kv_cache_usage_perc`` queue
``scaledobject.kaito.sh/threshold``         target average per replica (a quantity)    required
``scaledobject.kaito.sh/min-replicas``      ``0`` also scales an idle set to zero       1
``scaledobject.kaito.sh/max-replicas``      upper bound                                 see below
``scaledobject.kaito.sh/evaluationwindow``  scale-up stabilization window, seconds      60
``scaledobject.kaito.sh/scaleupcooldown``   seconds between two scale-up steps          300
``scaledobject.kaito.sh/scaledowncooldown`` scale-down window and step period, seconds  300
==========================================  ==========================================  ========

Without max-replicas the bound is what ``nodeCountLimit`` allows, else 10.  Each step adds or
removes one replica, as upstream's scaler does: a replica is a GPU node and a model load.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from kaito.api import constants as C
from kaito.runtime.gvk import GVK

HPA = GVK("autoscaling", "v2", "HorizontalPodAutoscaler")
MANAGER = "kaito-inferenceset"
DEFAULT_MAX_REPLICAS = 10
DEFAULT_EVALUATION_WINDOW_S = 60
DEFAULT_SCALE_UP_COOLDOWN_S = 300
DEFAULT_SCALE_DOWN_COOLDOWN_S = 300
DEFAULT_IDLE_S = 300
METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
QUANTITY = re.compile(r"^(\d+(\.\d*)?|\.\d+)(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")


class AnnotationError(ValueError):
    """A scaledobject.kaito.sh annotation that cannot be used; the message names it and the fix."""

    def __init__(self, key: str, message: str) -> None:
        self.field = f"metadata.annotations[{key}]"
        self.message = message
        super().__init__(f"{self.field}: {message}")


@dataclass(frozen=True)
class Autoscaling:
    """The parsed annotations."""

    metric: str
    threshold: str
    min_replicas: int
    max_replicas: int
    evaluation_window_s: int
    scale_up_cooldown_s: int
    scale_down_cooldown_s: int

    @property
    def to_zero(self) -> bool:
        return self.min_replicas == 0


def enabled(annotations: Mapping[str, str]) -> bool:
    return annotations.get(C.ANNOTATION_SCALE_AUTO_PROVISION, "").strip().lower() == "true"


def to_zero(annotations: Mapping[str, str]) -> bool:
    """The set opted into scale to zero: autoscaling on and min-replicas "0"."""
    return (
        enabled(annotations) and annotations.get(C.ANNOTATION_SCALE_MIN_REPLICAS, "").strip() == "0"
    )


def idle_seconds(annotations: Mapping[str, str]) -> int:
    """How long a scale-to-zero set may go without a request (default 300 s)."""
    return _int(annotations, C.ANNOTATION_SCALE_IDLE_SECONDS, DEFAULT_IDLE_S, 1, 86400)


def _int(annotations: Mapping[str, str], key: str, default: int, low: int, high: int) -> int:
    raw = annotations.get(key)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise AnnotationError(
            key, f'{raw!r} is not a whole number; write e.g. "{default}"'
        ) from None
    if not low <= value <= high:
        raise AnnotationError(key, f"{value} is out of range; use {low}..{high}")
    return value


def parse(annotations: Mapping[str, str], *, limit_replicas: int | None) -> Autoscaling:
    """The autoscaling settings, or AnnotationError naming the annotation to fix.

    ``limit_replicas`` is how many replicas nodeCountLimit allows (None: no limit).
    """
    metric = (annotations.get(C.ANNOTATION_SCALE_METRIC_NAME) or C.DEFAULT_SCALE_METRIC).strip()
    if not METRIC_NAME.match(metric):
        raise AnnotationError(
            C.ANNOTATION_SCALE_METRIC_NAME,
            f"{metric!r} is not a Prometheus metric name; e.g. {C.DEFAULT_SCALE_METRIC} or "
            "vllm:kv_cache_usage_perc",
        )
    threshold = (annotations.get(C.ANNOTATION_SCALE_THRESHOLD) or "").strip()
    if not threshold:
        raise AnnotationError(
            C.ANNOTATION_SCALE_THRESHOLD,
            f"is required with {C.ANNOTATION_SCALE_AUTO_PROVISION}: the target value of "
            f'{metric} per replica, e.g. "10" waiting requests or "0.8" KV-cache usage',
        )
    try:
        positive = QUANTITY.match(threshold) is not None and Decimal(
            re.sub(r"[a-zA-Z]+$", "", threshold)
        ) > Decimal(0)
    except InvalidOperation:
        positive = False
    if not positive:
        raise AnnotationError(
            C.ANNOTATION_SCALE_THRESHOLD,
            f'{threshold!r} is not a positive number; write e.g. "10" or "0.8"',
        )
    default_max = limit_replicas if limit_replicas else DEFAULT_MAX_REPLICAS
    min_replicas = _int(annotations, C.ANNOTATION_SCALE_MIN_REPLICAS, 1, 0, 1000)
    max_replicas = _int(annotations, C.ANNOTATION_SCALE_MAX_REPLICAS, default_max, 1, 1000)
    if max_replicas < max(min_replicas, 1):
        raise AnnotationError(
            C.ANNOTATION_SCALE_MAX_REPLICAS,
            f"{max_replicas} is below min-replicas ({min_replicas}); raise max-replicas",
        )
    return Autoscaling(
        metric=metric,
        threshold=threshold,
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        evaluation_window_s=_int(
            annotations, C.ANNOTATION_SCALE_EVALUATION_WINDOW, DEFAULT_EVALUATION_WINDOW_S, 0, 3600
        ),
        scale_up_cooldown_s=_int(
            annotations, C.ANNOTATION_SCALE_UP_COOLDOWN, DEFAULT_SCALE_UP_COOLDOWN_S, 1, 1800
        ),
        scale_down_cooldown_s=_int(
            annotations, C.ANNOTATION_SCALE_DOWN_COOLDOWN, DEFAULT_SCALE_DOWN_COOLDOWN_S, 1, 1800
        ),
    )


def hpa(
    name: str,
    namespace: str,
    owner: Mapping[str, Any],
    settings: Autoscaling,
) -> dict[str, Any]:
    """The HorizontalPodAutoscaler for the set (same name), owned by it.

    Its minReplicas is at least 1: an HPA cannot scale a target to zero (that needs an alpha
    feature gate), and it leaves a target at zero replicas alone, so scale-to-zero is the
    operator's idle timer and the activator's wake-up, not the HPA's.
    """
    return {
        "apiVersion": HPA.api_version,
        "kind": HPA.kind,
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {C.LABEL_INFERENCESET_CREATED_BY: name},
            "annotations": {C.ANNOTATION_SCALE_MANAGED_BY: MANAGER},
            "ownerReferences": [dict(owner)],
        },
        "spec": {
            "scaleTargetRef": {
                "apiVersion": f"{C.GROUP}/{C.V1BETA1}",
                "kind": C.INFERENCESET_KIND,
                "name": name,
            },
            "minReplicas": max(1, settings.min_replicas),
            "maxReplicas": settings.max_replicas,
            "metrics": [
                {
                    "type": "Pods",
                    "pods": {
                        "metric": {"name": settings.metric},
                        "target": {"type": "AverageValue", "averageValue": settings.threshold},
                    },
                }
            ],
            "behavior": {
                "scaleUp": {
                    "stabilizationWindowSeconds": settings.evaluation_window_s,
                    "selectPolicy": "Max",
                    "policies": [
                        {"type": "Pods", "value": 1, "periodSeconds": settings.scale_up_cooldown_s}
                    ],
                },
                "scaleDown": {
                    "stabilizationWindowSeconds": settings.scale_down_cooldown_s,
                    "selectPolicy": "Max",
                    "policies": [
                        {
                            "type": "Pods",
                            "value": 1,
                            "periodSeconds": settings.scale_down_cooldown_s,
                        }
                    ],
                },
            },
        },
    }


def describe(settings: Autoscaling) -> str:
    return (
        f"scales {max(1, settings.min_replicas)}-{settings.max_replicas} replicas on "
        f"{settings.metric} (target {settings.threshold} per replica)"
        + ("; idle sets scale to zero" if settings.to_zero else "")
    )


def hpa_problem(obj: Mapping[str, Any]) -> tuple[str, str] | None:
    """(reason, message) when the HPA reports it cannot scale, e.g. no metrics adapter.

    The HPA's own conditions say it best: ScalingActive=False carries the reason
    (FailedGetPodsMetric, ...) and the adapter's answer.  A target at zero replicas disables
    the HPA by design; that is not a problem.
    """
    for cond in (obj.get("status") or {}).get("conditions") or ():
        if cond.get("type") in ("AbleToScale", "ScalingActive") and cond.get("status") == "False":
            if cond.get("reason") == "ScalingDisabled":
                continue
            return str(cond.get("reason") or "HPAUnableToScale"), str(cond.get("message") or "")
    return None
