"""What wakes the workspace controller: each watched kind and the map back to Workspaces.

Owned namespaced objects point at their Workspace with a controller reference; NodeClaims
and nodes (cluster-scoped, no owner) carry the ownership labels instead; a bring-your-own
node wakes every Workspace whose ``resource.labelSelector`` it matches, and a ConfigMap the
Workspaces that name it in ``inference.config`` or ``tuning.config``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from kaito.api import constants as C
from kaito.controllers import configs
from kaito.controllers.common import CONTROLLER_REVISION, WORKSPACE
from kaito.controllers.expectations import CreateExpectations
from kaito.runtime.cache import Cache
from kaito.runtime.controller import Controller
from kaito.runtime.gvk import CONFIGMAP, GVK, JOB, NODE, POD, SERVICE, STATEFULSET, STORAGE_CLASS
from kaito.runtime.handlers import EnqueueForOwner, EnqueueMapped
from kaito.runtime.informer import MODIFIED, InformerEvent
from kaito.runtime.objects import KObject, to_dict
from kaito.runtime.predicates import (
    annotations_changed,
    any_of,
    generation_changed,
    labels_changed,
)
from kaito.runtime.request import Request

SELECTOR_INDEX = "matchLabels"
# One selector for every NodeClaim watch: two informers of one kind with different
# selectors would let a controller read a copy older than the event that woke it.
CLAIM_SELECTOR = f"{C.LABEL_KARPENTER_NODEPOOL}={C.KAITO_NODEPOOL}"
PROGRESS_PRIORITY = 10


def progress_priority(event: InformerEvent) -> int:
    """Changes to the objects that report a rollout's progress made elsewhere (a claim's
    status, a node's Ready, the StatefulSet's status, its pods, a Job) wake their Workspace
    ahead of Workspace events: when many Workspaces arrive at once, the reconcile that finds
    a pod Ready, and so finishes its Workspace, does not wait behind the first reconciles of
    all the others. Creations and deletions keep the default: a claim's or StatefulSet's
    creation is the echo of the operator's own write, and a new pod or node reports nothing
    a reconcile acts on before it changes again (it is scheduled, becomes Ready).
    """
    return PROGRESS_PRIORITY if event.type == MODIFIED else 0


def requests_for_labels(labels: Mapping[str, str]) -> Iterable[Request]:
    """Map an object carrying the ownership labels back to its Workspace."""
    name = labels.get(C.LABEL_WORKSPACE_NAME)
    namespace = labels.get(C.LABEL_WORKSPACE_NAMESPACE)
    if name and namespace:
        yield Request(namespace, name)


def selector_pairs(obj: Mapping[str, Any]) -> list[str]:
    """Index a Workspace by each `key=value` of its resource.labelSelector.matchLabels."""
    resource = obj.get("resource") or {}
    match = (resource.get("labelSelector") or {}).get("matchLabels") or {}
    return [f"{k}={v}" for k, v in match.items()]


def pod_owner(pod: KObject) -> list[Request]:
    name = pod.labels.get(C.LABEL_WORKSPACE_NAME)
    return [Request(pod.namespace, name)] if name else []


def workspaces_for_node(cache: Cache) -> Callable[[KObject], list[Request]]:
    """A node wakes the Workspace that owns it, or those whose selector it matches (BYO)."""

    def requests(node: KObject) -> list[Request]:
        labels = node.labels
        owned = list(requests_for_labels(labels))
        if owned or C.LABEL_KARPENTER_NODEPOOL in labels:
            return owned
        out: dict[Request, None] = {}
        for key, value in labels.items():
            for entry in cache.entries(WORKSPACE, index=(SELECTOR_INDEX, f"{key}={value}")):
                obj = cache.get(WORKSPACE, entry.namespace, entry.name)
                if obj is None:
                    continue
                match = to_dict(obj)["resource"]["labelSelector"].get("matchLabels") or {}
                if all(labels.get(k) == v for k, v in match.items()):
                    out[Request(entry.namespace, entry.name)] = None
        return list(out)

    return requests


def watch(
    ctrl: Controller, cache: Cache, claim_gvk: GVK, claims_created: CreateExpectations
) -> None:
    """Register the workspace controller's watches (and the indexes they use) on ``ctrl``;
    ``claims_created`` hears of every NodeClaim event."""
    cache.add_index(WORKSPACE, SELECTOR_INDEX, selector_pairs)
    cache.add_index(WORKSPACE, configs.CONFIG_INDEX, configs.config_map_names)
    cache.informer(claim_gvk, label_selector=CLAIM_SELECTOR).add_listener(claims_created.observe)
    # read when a StatefulSet is first made (local NVMe for the weights); wakes nobody
    cache.informer(STORAGE_CLASS, field_selector=f"metadata.name={C.LOCAL_NVME_STORAGE_CLASS}")
    owned = EnqueueForOwner(WORKSPACE)
    (
        ctrl.watches(
            WORKSPACE,
            predicates=[any_of(generation_changed, labels_changed, annotations_changed)],
        )
        .watches(
            STATEFULSET, owned, label_selector=C.LABEL_WORKSPACE_NAME, priority=progress_priority
        )
        .watches(JOB, owned, label_selector=C.LABEL_WORKSPACE_NAME, priority=progress_priority)
        # all ConfigMaps, in one informer: the ones we own and the ones Workspaces name
        .watches(CONFIGMAP, owned)
        .watches(CONFIGMAP, EnqueueMapped(configs.workspaces_using(cache)))
        .watches(SERVICE, owned, label_selector=C.LABEL_WORKSPACE_NAME)
        .watches(CONTROLLER_REVISION, owned, label_selector=C.LABEL_REVISION_WORKSPACE_NAME)
        .watches(
            POD,
            EnqueueMapped(pod_owner),
            label_selector=C.LABEL_WORKSPACE_NAME,
            priority=progress_priority,
        )
        .watches(
            claim_gvk,
            EnqueueMapped(lambda c: requests_for_labels(c.labels)),
            label_selector=CLAIM_SELECTOR,
            priority=progress_priority,
        )
        .watches(NODE, EnqueueMapped(workspaces_for_node(cache)), priority=progress_priority)
    )
