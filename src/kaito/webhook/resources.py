"""The nodes a Workspace asks for: instance type, bring-your-own nodes, partitions, node count,
and whether the model fits them.

Sizing is the controller's own code (:func:`kaito.presets.plan.plan_workspace`), so a Workspace
admitted here is one the controller can size; the rules upstream Kaito adds on top (the
v1alpha1 and transformers-runtime memory check, partitions only on the user's nodes) follow
upstream's behaviour with our numbers in the message.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from kaito import presets
from kaito.api import WorkspaceBase, constants
from kaito.presets.catalog import GIB
from kaito.presets.estimator import SIZING_CONTEXT
from kaito.presets.partition import mig_profile_problem, partitioned
from kaito.presets.plan import plan_workspace
from kaito.presets.skus import LearnedSku, is_azure_name, learn_from_nodes, other_cloud
from kaito.webhook.view import ClusterView, FieldError, Node, Policy

_SHOWN = 40
BYPASS_HINT = f" (or annotate {constants.ANNOTATION_BYPASS_RESOURCE_CHECKS} to skip this check)"
INSTANCE_TYPE = "resource.instanceType"
SELECTOR = "resource.labelSelector"
PARTITION = "resource.partition"


def names(items: Sequence[str]) -> str:
    shown = ", ".join(items[:_SHOWN])
    return shown + (f" and {len(items) - _SHOWN} more" if len(items) > _SHOWN else "")


def bypassed(ws: WorkspaceBase) -> bool:
    return constants.ANNOTATION_BYPASS_RESOURCE_CHECKS in (ws.metadata.annotations or {})


def runtime(ws: WorkspaceBase) -> str:
    return (ws.metadata.annotations or {}).get(constants.ANNOTATION_RUNTIME, "vllm").lower()


# --------------------------------------------------------------------------- instance types


def _known_list() -> str:
    return names(sorted(s.name for s in presets.list_skus()))


def resolve_instance_type(
    ws: WorkspaceBase, view: ClusterView | None, policy: Policy
) -> tuple[presets.Sku | None, LearnedSku | None, list[FieldError]]:
    """The instance type's figures: the table's, or learned (node labels, Azure's SKU list)."""
    name = ws.resource.instance_type
    if name is None:
        return None, None, []
    if policy.node_provisioner == "byo":
        return (
            None,
            None,
            [
                FieldError(
                    INSTANCE_TYPE,
                    "node auto-provisioning is off in this cluster (bring-your-own nodes), so "
                    "instanceType must be empty; remove it and select your GPU nodes with "
                    "resource.labelSelector",
                )
            ],
        )
    sku = presets.get_sku(name)
    if sku is not None:
        return sku, None, []
    cloud = other_cloud(name)
    if cloud is not None or not is_azure_name(name):
        where = f"looks like {cloud} instance type" if cloud else "is not an Azure VM size"
        return (
            None,
            None,
            [
                FieldError(
                    INSTANCE_TYPE,
                    f"{name!r} {where}; Kaito provisions nodes on Azure only (VM sizes such as "
                    "Standard_NC24ads_A100_v4). On any other cloud or on-premises, omit "
                    "instanceType and select your own GPU nodes with resource.labelSelector",
                )
            ],
        )
    if view is not None:
        learned = learn_from_nodes(name, view.typed_nodes or ())
        if learned is None:
            learned = view.cloud_sku
        if learned is not None:
            return learned.sku, learned, []
    tried = "no node of that size carries nvidia.com/gpu.count and nvidia.com/gpu.memory labels"
    if view is not None and view.cloud_error:
        tried += f", and Azure's resource SKU list could not be read ({view.cloud_error})"
    elif policy.azure_location:
        tried += (
            f", and Azure's resource SKU list for {policy.azure_location} has no such size "
            "with a GPU model Kaito knows"
        )
    return (
        None,
        None,
        [
            FieldError(
                INSTANCE_TYPE,
                f"unknown instance type {name!r} ({tried}); accepted: {_known_list()}. Or label "
                "a node of that size with nvidia.com/gpu.count and nvidia.com/gpu.memory (GPU "
                "Feature Discovery does), or omit instanceType and select your own GPU nodes "
                "with resource.labelSelector",
            )
        ],
    )


# --------------------------------------------------------------------------- bring-your-own


def selector_matches(selector: Any, labels: Mapping[str, str]) -> bool:
    """Does a node with `labels` match (reserved Kaito keys in matchLabels are ignored)?"""
    for key, value in (selector.match_labels or {}).items():
        if key not in constants.RESERVED_SELECTOR_KEYS and labels.get(key) != value:
            return False
    for req in selector.match_expressions or ():
        present = req.key in labels
        values = req.values or []
        ok = {
            "In": present and labels.get(req.key) in values,
            "NotIn": not present or labels.get(req.key) not in values,
            "Exists": present,
            "DoesNotExist": not present,
        }[req.operator]
        if not ok:
            return False
    return True


def _node_name(node: Node) -> str:
    return str((node.get("metadata") or {}).get("name"))


def _labels(node: Node) -> Mapping[str, str]:
    return (node.get("metadata") or {}).get("labels") or {}


def byo_nodes(
    ws: WorkspaceBase, nodes: Sequence[Node], preset: presets.Preset | None
) -> tuple[presets.Sku | None, list[FieldError]]:
    """Bring-your-own nodes must exist and carry GPU Feature Discovery labels; their shape."""
    selector = ws.resource.label_selector
    matching = [n for n in nodes if selector_matches(selector, _labels(n))]
    found = sorted(_node_name(n) for n in matching)
    errors = [
        FieldError(
            f"resource.preferredNodes[{i}]",
            f"node {wanted!r} does not exist or does not match resource.labelSelector; "
            "list only selected nodes",
        )
        for i, wanted in enumerate(ws.resource.preferred_nodes or ())
        if wanted not in found
    ]
    if not matching:
        errors.append(
            FieldError(
                SELECTOR,
                "no node matches the selector; label your GPU nodes with it, or set "
                "resource.instanceType so Kaito provisions nodes",
            )
        )
        return None, errors
    if preset is not None and "vllm" not in preset.runtimes:
        return None, errors  # a CPU-only model needs no GPU labels
    missing = sorted(
        _node_name(n) for n in matching if not all(k in _labels(n) for k in constants.GPU_LABELS)
    )
    if missing:
        errors.append(
            FieldError(
                SELECTOR,
                f"selected node(s) {names(missing)} lack the GPU labels "
                f"{', '.join(constants.GPU_LABELS)}; install NVIDIA GPU Feature Discovery or "
                "add the labels, or set resource.instanceType so Kaito provisions nodes",
            )
        )
        return None, errors
    return presets.sku_from_node_labels(_labels(matching[0])), errors


# --------------------------------------------------------------------------- partitions, count


def check_partition(
    ws: WorkspaceBase, policy: Policy, node_sku: presets.Sku | None
) -> list[FieldError]:
    """Upstream's rule: GPU partitions only on the user's own nodes, behind their gates."""
    partition = ws.resource.partition
    if partition is None:
        return []
    if ws.tuning is not None:
        return [FieldError(PARTITION, "GPU partitioning is not supported for tuning; remove it")]
    if ws.resource.instance_type is not None:
        return [
            FieldError(
                PARTITION,
                "GPU partitions need bring-your-own nodes: remove resource.instanceType and "
                "select your (MIG-configured) GPU nodes with resource.labelSelector, or remove "
                "resource.partition",
            )
        ]
    if partition.mode == "mig":
        if not policy.enable_mig:
            return [
                FieldError(
                    PARTITION,
                    "MIG support is not enabled; start the operator with "
                    "--feature-gates=enableMIG=true, or remove resource.partition",
                )
            ]
        problem = mig_profile_problem(partition.profile)
        return [FieldError(f"{PARTITION}.profile", problem)] if problem else []
    if not policy.enable_accelerator:
        return [
            FieldError(
                PARTITION,
                "accelerator partitions are not enabled; start the operator with "
                "--feature-gates=enableAccelerator=true, or remove resource.partition",
            )
        ]
    if node_sku is not None and partition.count and partition.count > node_sku.gpu_count:
        return [
            FieldError(
                f"{PARTITION}.count",
                f"{partition.count} GPUs asked for, but the selected nodes have "
                f"{node_sku.gpu_count}; use at most {node_sku.gpu_count}",
            )
        ]
    return []


def check_count(ws: WorkspaceBase) -> list[FieldError]:
    """resource.count: one node for tuning; 0 means "Kaito sizes it" (vLLM, as upstream)."""
    count = ws.resource.count
    if ws.tuning is not None and count is not None and count > 1:
        return [
            FieldError(
                "resource.count",
                f"tuning runs on one node, got {count}; set resource.count to 1 (or remove it)",
            )
        ]
    if ws.inference is not None and count == 0 and runtime(ws) == "transformers":
        return [
            FieldError(
                "resource.count",
                "0 leaves the transformers runtime no node (only vLLM sizes the node count "
                "itself); set resource.count to 1",
            )
        ]
    return []


# --------------------------------------------------------------------------- model fit


def _context(preset: presets.Preset, config: Mapping[str, Any] | None) -> int:
    try:
        wanted = presets.user_max_model_len(config)
    except presets.SpecError:
        wanted = None
    return wanted or min(SIZING_CONTEXT, preset.context_limit)


def total_memory_fit(
    ws: WorkspaceBase,
    preset: presets.Preset,
    sku: presets.Sku,
    config: Mapping[str, Any] | None,
) -> list[FieldError]:
    """v1alpha1 and the transformers runtime: count x the node's GPU memory holds the model.

    (v1beta1 with vLLM spreads a model over as many nodes as it needs instead.)
    """
    alpha = ws.api_version.endswith(constants.V1ALPHA1)
    transformers = runtime(ws) == "transformers"
    if sku.cpu_only or not (alpha or transformers):
        return []
    nodes = max(ws.resource.count or 1, 1)
    context = _context(preset, config)
    weights = preset.param_bytes / GIB
    kv_cache = context * preset.kv_bytes_per_token / GIB
    need = weights + kv_cache
    have = nodes * sku.total_gpu_memory_gib
    detail = (
        f"{preset.name} needs {need:.1f} GiB of GPU memory (weights {weights:.1f} GiB + KV cache "
        f"of a {context}-token context {kv_cache:.1f} GiB)"
    )
    if have < need:
        return [
            FieldError(
                INSTANCE_TYPE,
                f"{detail} but {nodes} x {sku.name} have {have:g} GiB in all "
                f"({sku.gpu_count} x {sku.gpu_memory_gib:g} GiB per node); choose an instance "
                "type with more GPU memory or raise resource.count" + BYPASS_HINT,
            )
        ]
    if transformers and need > sku.total_gpu_memory_gib:
        return [
            FieldError(
                INSTANCE_TYPE,
                f"{detail}, more than one {sku.name} has ({sku.total_gpu_memory_gib:g} GiB), and "
                "the transformers runtime cannot spread a model over nodes; choose a larger "
                "instance type or remove the kaito.sh/runtime annotation (vLLM)",
            )
        ]
    return []


def plan_fit(
    ws: WorkspaceBase,
    sku: presets.Sku,
    config: Mapping[str, Any] | None,
    *,
    available_nodes: int | None = None,
    hub_presets: Mapping[str, presets.Preset] | None = None,
) -> list[FieldError]:
    """The controller's own sizing of the Workspace on `sku` must succeed.

    `hub_presets` holds the model the Workspace names by hub id, sized from the hub.
    """
    doc = ws.model_dump(mode="json", by_alias=True, exclude_none=True)
    partition = ws.resource.partition
    if partition is not None:
        sku = partitioned(sku, partition.mode, profile=partition.profile, count=partition.count)
    try:
        plan = plan_workspace(doc, inference_config=config, sku=sku, hub_presets=hub_presets)
    except presets.FitError as exc:
        field = exc.field
        if ws.resource.instance_type is None and field == INSTANCE_TYPE:
            field = SELECTOR  # bring-your-own nodes: the selector chose them
        return [] if bypassed(ws) else [FieldError(field, exc.reason + BYPASS_HINT)]
    except presets.SpecError as exc:
        return [FieldError(exc.field, exc.reason)]
    estimate = plan.estimate
    if (
        available_nodes is not None
        and estimate is not None
        and plan.mode == "inference"
        and estimate.node_count > available_nodes
        and not bypassed(ws)
    ):
        return [
            FieldError(
                SELECTOR,
                f"{plan.preset.name if plan.preset else 'the model'} needs "
                f"{estimate.node_count} nodes of {sku.gpu_count} x {sku.gpu_memory_gib:g} GiB "
                f"GPUs but {available_nodes} match; label more nodes" + BYPASS_HINT,
            )
        ]
    if partition is not None and partition.mode == "mig" and estimate and estimate.node_count > 1:
        return [
            FieldError(
                PARTITION,
                f"the model needs {estimate.min_gpus} GPUs of {sku.gpu_memory_gib:g} GiB but a "
                f"MIG slice is one; choose a larger profile" + BYPASS_HINT,
            )
        ]
    return []
