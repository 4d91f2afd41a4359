"""The objects the workspace controller owns, built as plain dicts from plain inputs.

Pure functions: the reconciler decides *what* (preset, SKU, node count, adapters) and these
say *how it looks* on the wire, so the shape is unit-tested without a cluster and applied
with server-side apply (an unchanged object costs no write).
"""

from __future__ import annotations

import copy
import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kaito.api import constants as C
from kaito.presets.vllm import GROUP_PORT, MASTER_PORT

WORKSPACE_LABEL = C.LABEL_WORKSPACE_NAME
WORKSPACE_NAMESPACE_LABEL = C.LABEL_WORKSPACE_NAMESPACE
REVISION_ANNOTATION = C.ANNOTATION_WORKSPACE_REVISION
HASH_ANNOTATION = C.ANNOTATION_WORKSPACE_HASH
NODEPOOL_LABEL = C.LABEL_KARPENTER_NODEPOOL
NODEPOOL_NAME = C.KAITO_NODEPOOL
GPU_RESOURCE = C.RESOURCE_NVIDIA_GPU
INSTANCE_TYPE_LABEL = C.LABEL_INSTANCE_TYPE
RESERVED_SELECTOR_KEYS = C.RESERVED_SELECTOR_KEYS
SERVING_PORT = 5000
ADAPTER_ROOT = "/mnt/adapter"
CONFIG_DIR = "/mnt/config"
CONFIG_KEY = "inference_config.yaml"
DRAIN_SECONDS = 5
WEIGHTS_DIR = "/workspace/weights"
PULL_SECRET_ROOT = "/root/.docker/config.d"
# A container that dies without writing its termination log (a traceback) still leaves a
# reason: the tail of its log, which the Workspace's conditions then show.
TERMINATION_MESSAGE_POLICY = "FallbackToLogsOnError"
POD_INDEX_LABEL = "apps.kubernetes.io/pod-index"  # set by the StatefulSet controller
# the StatefulSet controller labels each pod with the name of its ControllerRevision
REVISION_LABEL = "controller-revision-hash"
GPU_TOLERATIONS: tuple[dict[str, str], ...] = (
    {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"},
    {"key": "sku", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"},
)
# Azure spot node pools taint their nodes; upstream tolerates it on Azure
SPOT_TOLERATION = {
    "key": C.LABEL_AZURE_SCALESET_PRIORITY,
    "operator": "Equal",
    "value": "spot",
    "effect": "NoSchedule",
}
LOCAL_NVME_STORAGE_CLASS = C.LOCAL_NVME_STORAGE_CLASS


def tolerations(*, spot: bool) -> list[dict[str, str]]:
    """The GPU tolerations every Workspace pod gets (and Azure's spot taint on Azure)."""
    return [dict(t) for t in GPU_TOLERATIONS] + ([dict(SPOT_TOLERATION)] if spot else [])


@dataclass(frozen=True)
class Owner:
    """The Workspace every object points back to."""

    name: str
    namespace: str
    uid: str
    api_version: str = "kaito.sh/v1beta1"
    kind: str = "Workspace"

    def reference(self) -> dict[str, Any]:
        return {
            "apiVersion": self.api_version,
            "kind": self.kind,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


@dataclass(frozen=True)
class ImageAdapter:
    """A LoRA adapter shipped as an image, fetched by an init container."""

    name: str
    image: str
    pull_secrets: tuple[str, ...] = ()


@dataclass(frozen=True)
class VolumeAdapter:
    """A LoRA adapter already on a volume, mounted as is."""

    name: str
    volume_source: Mapping[str, Any]


@dataclass(frozen=True)
class InferenceWorkload:
    """Everything the inference StatefulSet depends on."""

    owner: Owner
    replicas: int
    image: str
    command: Sequence[str]
    args: Sequence[str]
    env: Mapping[str, str]
    gpus_per_node: int
    revision: str
    gpu_resource: str = GPU_RESOURCE  # nvidia.com/mig-<profile> for a MIG partition
    node_selector_labels: Mapping[str, str] = field(default_factory=dict)
    provisioned: bool = True  # nodes made for this Workspace carry its ownership labels
    pinned_nodes: Sequence[str] = ()  # the user's own nodes chosen for it (node_affinity)
    preferred_nodes: Sequence[str] = ()  # resource.preferredNodes
    spot_toleration: bool = False
    weights_claim_storage: str | None = None  # local NVMe: a PVC of this size for the weights
    benchmark_args: Sequence[str] | None = None  # startup probe = serving.benchmark with these
    adapters: Sequence[ImageAdapter | VolumeAdapter] = ()
    config_map: str | None = None
    model_access_secret: str | None = None
    image_pull_secrets: Sequence[str] = ()
    weights_bytes: int = 0
    weights_image: str | None = None  # model files shipped as an image, fetched at start
    weights_pull_secrets: Sequence[str] = ()
    plain_http_registries: frozenset[str] = frozenset()
    inference_set: str | None = None  # the InferenceSet this Workspace is a replica of


def owned_metadata(owner: Owner, name: str, revision: str | None = None) -> dict[str, Any]:
    """Metadata of an object the Workspace owns: its label, controller reference, revision."""
    meta: dict[str, Any] = {
        "name": name,
        "namespace": owner.namespace,
        "labels": {WORKSPACE_LABEL: owner.name},
        "ownerReferences": [owner.reference()],
    }
    if revision is not None:
        meta["annotations"] = {REVISION_ANNOTATION: revision}
    return meta


def sanitized_selector(match_labels: Mapping[str, str] | None) -> dict[str, str]:
    """The user's matchLabels without the keys the operator reserves for itself."""
    return {k: v for k, v in (match_labels or {}).items() if k not in RESERVED_SELECTOR_KEYS}


def ownership_labels(owner: Owner) -> dict[str, str]:
    return {WORKSPACE_LABEL: owner.name, WORKSPACE_NAMESPACE_LABEL: owner.namespace}


def nodeclaim_name(owner: Owner, index: int) -> str:
    """Deterministic, so a restarted controller finds the claim it already made.

    11 characters (``ws`` + 9 hex), which also satisfies AKS agent-pool naming.
    """
    digest = hashlib.sha256(f"{owner.namespace}/{owner.name}/{index}".encode()).hexdigest()
    return f"ws{digest[:9]}"


def nodeclaim(
    owner: Owner,
    index: int,
    *,
    instance_type: str,
    match_labels: Mapping[str, str] | None = None,
    storage: str = "1024Gi",
    node_image_family: str = "ubuntu",
    api_version: str = "karpenter.sh/v1",
    gpu: bool = False,
) -> dict[str, Any]:
    """A Karpenter NodeClaim (v1) or, for old gpu-provisioner releases, a v1alpha5 Machine.

    ``gpu``: the label ``accelerator=nvidia`` that upstream requires on GPU nodes travels
    with the claim (Karpenter and gpu-provisioner copy claim labels onto the node).
    """
    labels = {NODEPOOL_LABEL: NODEPOOL_NAME, **ownership_labels(owner)}
    labels |= sanitized_selector(match_labels)
    if gpu:
        labels[C.LABEL_ACCELERATOR] = C.ACCELERATOR_NVIDIA
    requirements = [
        {"key": NODEPOOL_LABEL, "operator": "In", "values": [NODEPOOL_NAME]},
        {"key": INSTANCE_TYPE_LABEL, "operator": "In", "values": [instance_type]},
        {"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]},
        {"key": "karpenter.azure.com/sku-name", "operator": "In", "values": [instance_type]},
    ]
    spec: dict[str, Any] = {
        "taints": [{"key": "sku", "value": "gpu", "effect": "NoSchedule"}],
        "requirements": requirements,
        "resources": {"requests": {"storage": storage}},
    }
    if api_version == "karpenter.sh/v1":
        spec["nodeClassRef"] = {"group": "kaito.sh", "kind": "KaitoNodeClass", "name": "default"}
        kind = "NodeClaim"
    else:
        kind = "Machine"
        labels["karpenter.sh/provisioner-name"] = "default"
        spec["machineTemplateRef"] = {"name": "default"}
    return {
        "apiVersion": api_version,
        "kind": kind,
        "metadata": {
            "name": nodeclaim_name(owner, index),
            "labels": labels,
            "annotations": {
                "karpenter.sh/do-not-disrupt": "true",
                "kaito.sh/node-image-family": node_image_family,
            },
        },
        "spec": spec,
    }


def headless_name(owner: Owner) -> str:
    return f"{owner.name}-headless"


def leader_host(owner: Owner) -> str:
    """Pod 0's name under the headless Service (cluster-domain agnostic: ``….svc``)."""
    return f"{owner.name}-0.{headless_name(owner)}.{owner.namespace}.svc"


def services(owner: Owner, *, load_balancer: bool = False) -> tuple[dict[str, Any], dict[str, Any]]:
    """The client-facing Service (80 → 5000, the leader pod only) and the headless one;
    ``load_balancer`` (annotation ``kaito.sh/enablelb: "True"``) makes the first a LoadBalancer."""
    meta = {"namespace": owner.namespace, "ownerReferences": [owner.reference()]}
    leader = {WORKSPACE_LABEL: owner.name, "statefulset.kubernetes.io/pod-name": f"{owner.name}-0"}
    main = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": owner.name, "labels": {WORKSPACE_LABEL: owner.name}, **meta},
        "spec": {
            "type": "LoadBalancer" if load_balancer else "ClusterIP",
            "selector": leader,
            "publishNotReadyAddresses": True,
            "ports": [
                {"name": "http", "port": 80, "targetPort": SERVING_PORT, "protocol": "TCP"},
            ],
        },
    }
    headless = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": headless_name(owner),
            "labels": {WORKSPACE_LABEL: owner.name},
            **meta,
        },
        "spec": {
            "clusterIP": "None",
            "selector": {WORKSPACE_LABEL: owner.name},
            "publishNotReadyAddresses": True,
        },
    }
    return main, headless


def startup_failure_threshold(weights_bytes: int) -> int:
    """Big models take long to load: 15 min + 18 s per GiB, clamped to 30..180 min."""
    seconds = 15 * 60 + 18 * weights_bytes / 2**30
    seconds = min(max(seconds, 30 * 60), 180 * 60)
    return math.ceil(seconds / 10)


def _health_probe(**extra: int) -> dict[str, Any]:
    return {"httpGet": {"path": "/health", "port": SERVING_PORT}, **extra}


def node_affinity(
    owner: Owner,
    node_selector_labels: Mapping[str, str],
    *,
    provisioned: bool,
    pinned_nodes: Sequence[str] = (),
    preferred_nodes: Sequence[str] = (),
) -> dict[str, Any] | None:
    """Node affinity: the user's labels, on the nodes made for this Workspace (ownership
    labels) and/or on the user's own nodes chosen for it (pinned by name, one term each, as
    a node field selector takes one name); terms are ORed.

    With neither (nodes brought by the user, auto-provisioning off) the user's labels alone
    select them, as upstream does; ``preferred_nodes`` become preferences, in their order.
    """
    user = dict(sanitized_selector(node_selector_labels))

    def exprs(labels: Mapping[str, str]) -> list[dict[str, Any]]:
        return [{"key": k, "operator": "In", "values": [v]} for k, v in sorted(labels.items())]

    def named(node: str) -> list[dict[str, Any]]:
        return [{"key": "metadata.name", "operator": "In", "values": [node]}]

    terms: list[dict[str, Any]] = []
    if provisioned:
        terms.append({"matchExpressions": exprs(user | ownership_labels(owner))})
    for node in sorted(pinned_nodes):
        terms.append({"matchExpressions": exprs(user), "matchFields": named(node)})
    if not terms and user:
        terms.append({"matchExpressions": exprs(user)})
    affinity: dict[str, Any] = {}
    if terms:
        for term in terms:
            if not term.get("matchExpressions"):
                term.pop("matchExpressions", None)
        affinity["requiredDuringSchedulingIgnoredDuringExecution"] = {"nodeSelectorTerms": terms}
    if preferred_nodes:
        affinity["preferredDuringSchedulingIgnoredDuringExecution"] = [
            {"weight": max(100 - i, 1), "preference": {"matchFields": named(node)}}
            for i, node in enumerate(preferred_nodes)
        ]
    return {"nodeAffinity": affinity} if affinity else None


WEIGHTS_FETCHER = "model-weights-downloader"


def plain_http_flag(image: str, plain_http_registries: frozenset[str]) -> list[str]:
    """``--plain-http`` for an image whose registry the operator was told speaks plain HTTP.

    Weights, adapters and tuning data are pulled (and adapters pushed) by the serving image's
    own tools inside the pod, not by the container runtime, so a registry that a node's
    runtime is configured to reach over HTTP must be named to them as well.
    """
    return ["--plain-http"] if image.split("/", 1)[0] in plain_http_registries else []


def weights_init_container(work: InferenceWorkload) -> dict[str, Any]:
    """Copies the model image's files into /workspace/weights before vLLM starts."""
    assert work.weights_image is not None
    args = ["--image", work.weights_image, "--dest", WEIGHTS_DIR]
    args += plain_http_flag(work.weights_image, work.plain_http_registries)
    mounts: list[dict[str, Any]] = [{"name": "model-weights-volume", "mountPath": WEIGHTS_DIR}]
    if work.weights_pull_secrets:
        secret_dir = f"{PULL_SECRET_ROOT}/model-weights"
        args += ["--docker-config", secret_dir]
        mounts.append(
            {"name": "docker-config-model-weights", "mountPath": secret_dir, "readOnly": True}
        )
    return {
        "name": WEIGHTS_FETCHER,
        "image": work.image,
        "command": ["python3", "-m", "serving.fetch"],
        "args": args,
        "volumeMounts": mounts,
        "terminationMessagePolicy": TERMINATION_MESSAGE_POLICY,
    }


def adapter_init_container(
    adapter: ImageAdapter, image: str, plain_http_registries: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """Copies an adapter image's files into /mnt/adapter/<name> before vLLM starts."""
    args = ["--image", adapter.image, "--dest", f"{ADAPTER_ROOT}/{adapter.name}"]
    args += plain_http_flag(adapter.image, plain_http_registries)
    mounts: list[dict[str, Any]] = [{"name": "adapter-volume", "mountPath": ADAPTER_ROOT}]
    if adapter.pull_secrets:
        secret_dir = f"{PULL_SECRET_ROOT}/{adapter.name}"
        args += ["--docker-config", secret_dir]
        mounts.append(
            {"name": f"docker-config-{adapter.name}", "mountPath": secret_dir, "readOnly": True}
        )
    return {
        "name": f"adapter-{adapter.name}"[:63],
        "image": image,
        "command": ["python3", "-m", "serving.fetch"],
        "args": args,
        "volumeMounts": mounts,
        "terminationMessagePolicy": TERMINATION_MESSAGE_POLICY,
    }


def _pull_secret_volume(adapter: ImageAdapter) -> dict[str, Any]:
    return _projected_secrets(f"docker-config-{adapter.name}", adapter.pull_secrets)


def _projected_secrets(volume: str, secrets: Sequence[str]) -> dict[str, Any]:
    return {
        "name": volume,
        "projected": {
            "sources": [
                {
                    "secret": {
                        "name": secret,
                        "items": [{"key": ".dockerconfigjson", "path": f"{secret}.json"}],
                    }
                }
                for secret in secrets
            ]
        },
    }


def statefulset(work: InferenceWorkload) -> dict[str, Any]:
    """The inference StatefulSet: one pod per node, vLLM behind /health probes."""
    owner = work.owner
    pod_labels = {WORKSPACE_LABEL: owner.name}
    template_labels = dict(pod_labels)
    if work.inference_set:
        # an InferenceSet's scale selector and Service find its replicas' pods by this label
        template_labels[C.LABEL_INFERENCESET_CREATED_BY] = work.inference_set
    volumes: list[dict[str, Any]] = [{"name": "dshm", "emptyDir": {"medium": "Memory"}}]
    if not work.weights_claim_storage:  # else the StatefulSet's volumeClaimTemplate
        volumes.append({"name": "model-weights-volume", "emptyDir": {}})
    mounts: list[dict[str, Any]] = [
        {"name": "dshm", "mountPath": "/dev/shm"},
        {"name": "model-weights-volume", "mountPath": WEIGHTS_DIR},
    ]
    init_containers: list[dict[str, Any]] = []
    if work.weights_image:
        init_containers.append(weights_init_container(work))
        if work.weights_pull_secrets:
            volumes.append(
                _projected_secrets("docker-config-model-weights", work.weights_pull_secrets)
            )
    image_adapters = [a for a in work.adapters if isinstance(a, ImageAdapter)]
    if image_adapters:
        volumes.append({"name": "adapter-volume", "emptyDir": {}})
        mounts.append({"name": "adapter-volume", "mountPath": ADAPTER_ROOT})
    for adapter in work.adapters:
        if isinstance(adapter, ImageAdapter):
            init_containers.append(
                adapter_init_container(adapter, work.image, work.plain_http_registries)
            )
            if adapter.pull_secrets:
                volumes.append(_pull_secret_volume(adapter))
        else:
            volumes.append({"name": f"adapter-{adapter.name}", **dict(adapter.volume_source)})
            mounts.append(
                {"name": f"adapter-{adapter.name}", "mountPath": f"{ADAPTER_ROOT}/{adapter.name}"}
            )
    if work.config_map:
        volumes.append({"name": "config-volume", "configMap": {"name": work.config_map}})
        mounts.append({"name": "config-volume", "mountPath": CONFIG_DIR})

    env: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in sorted(work.env.items())]
    if work.model_access_secret:
        env.append(
            {
                "name": "HF_TOKEN",
                "valueFrom": {
                    "secretKeyRef": {
                        "name": work.model_access_secret,
                        "key": "HF_TOKEN",
                        "optional": True,
                    }
                },
            }
        )
    resources: dict[str, Any] = {}
    if work.gpus_per_node:
        gpu = {work.gpu_resource: str(work.gpus_per_node)}
        resources = {"requests": dict(gpu), "limits": dict(gpu)}
    container: dict[str, Any] = {
        "name": owner.name,
        "image": work.image,
        "command": list(work.command),
        "args": list(work.args),
        "env": env,
        "ports": [{"name": "http", "containerPort": SERVING_PORT, "protocol": "TCP"}],
        "resources": resources,
        "volumeMounts": mounts,
        "startupProbe": _health_probe(
            periodSeconds=10, failureThreshold=startup_failure_threshold(work.weights_bytes)
        ),
        "livenessProbe": _health_probe(periodSeconds=10, failureThreshold=3),
        "readinessProbe": _health_probe(periodSeconds=10, initialDelaySeconds=5),
        "terminationMessagePolicy": TERMINATION_MESSAGE_POLICY,
    }
    if work.replicas > 1:
        join_group(container, owner)
    if work.benchmark_args is not None:
        container["startupProbe"] = benchmark_probe(work)
    if work.inference_set:
        # a replica behind the set's shared Service: stay up while the endpoint removal
        # spreads, so a scale-down drops no request (SIGTERM then lets in-flight ones finish)
        container["lifecycle"] = {"preStop": {"sleep": {"seconds": DRAIN_SECONDS}}}
    pod_spec: dict[str, Any] = {
        "containers": [container],
        "volumes": volumes,
        "tolerations": tolerations(spot=work.spot_toleration),
    }
    if init_containers:
        pod_spec["initContainers"] = init_containers
    affinity = node_affinity(
        owner,
        work.node_selector_labels,
        provisioned=work.provisioned,
        pinned_nodes=work.pinned_nodes,
        preferred_nodes=work.preferred_nodes,
    )
    if affinity:
        pod_spec["affinity"] = affinity
    pull_secrets = sorted(
        {
            *work.image_pull_secrets,
            *work.weights_pull_secrets,
            *(s for a in image_adapters for s in a.pull_secrets),
        }
    )
    if pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": s} for s in pull_secrets]
    template = {
        # the revision on the pod template rolls pods when the spec changes
        "metadata": {
            "labels": template_labels,
            "annotations": {REVISION_ANNOTATION: work.revision},
        },
        "spec": pod_spec,
    }
    sts = _statefulset(owner, work.replicas, work.revision, template)
    if work.weights_claim_storage:
        sts["spec"]["volumeClaimTemplates"] = [weights_claim(owner, work.weights_claim_storage)]
    return sts


def benchmark_probe(work: InferenceWorkload) -> dict[str, Any]:
    """Upstream's post-load benchmark as the startup probe: it fails until /health answers,
    then loads the server for ``--duration-s`` and logs the result (``serving.benchmark``)."""
    args = list(work.benchmark_args or ())
    duration = float(args[args.index("--duration-s") + 1]) if "--duration-s" in args else 30.0
    command = ["python3", "-m", "serving.benchmark", "--port", str(SERVING_PORT), *args]
    return {
        "exec": {"command": command},
        "periodSeconds": 10,
        "timeoutSeconds": math.ceil(duration) + 120,
        "failureThreshold": startup_failure_threshold(work.weights_bytes),
    }


def weights_claim(owner: Owner, storage: str) -> dict[str, Any]:
    """The model weights on the node's local NVMe (upstream's volumeClaimTemplate): one PVC
    per pod of StorageClass kaito-local-nvme-disk, deleted with the StatefulSet."""
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "model-weights-volume", "labels": {WORKSPACE_LABEL: owner.name}},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": LOCAL_NVME_STORAGE_CLASS,
            "resources": {"requests": {"storage": storage}},
        },
    }


def join_group(container: dict[str, Any], owner: Owner) -> None:
    """Make the serving container one pod of a multi-node group (see serving/group.py).

    The pod template is shared, so each pod learns its rank from its index (``POD_INDEX``)
    and the launcher picks the role: pod 0 leads (the engine and the OpenAI server; the client
    Service targets it), the others run vLLM's headless members under a supervisor. The probes
    stay the same on every pod: the leader answers /health for the model, a worker for its
    supervisor. ``POD_TEMPLATE_REVISION`` keeps old and new pods of a rollout out of one group;
    ``VLLM_HOST_IP`` is the address vLLM tells its peers.
    """
    container["args"] = [*container["args"], "--group-leader", f"{leader_host(owner)}:{GROUP_PORT}"]
    container["env"] = [
        *container["env"],
        {
            "name": "POD_INDEX",
            "valueFrom": {"fieldRef": {"fieldPath": f"metadata.labels['{POD_INDEX_LABEL}']"}},
        },
        {
            "name": "POD_TEMPLATE_REVISION",
            "valueFrom": {
                "fieldRef": {"fieldPath": f"metadata.annotations['{REVISION_ANNOTATION}']"}
            },
        },
        {"name": "VLLM_HOST_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
    ]
    container["ports"] = [
        *container["ports"],
        {"name": "group", "containerPort": GROUP_PORT, "protocol": "TCP"},
        {"name": "rendezvous", "containerPort": MASTER_PORT, "protocol": "TCP"},
    ]


def _statefulset(
    owner: Owner, replicas: int, revision: str, template: dict[str, Any]
) -> dict[str, Any]:
    """The inference StatefulSet around a pod template: one pod per node, in parallel."""
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": owned_metadata(owner, owner.name, revision),
        "spec": {
            "replicas": replicas,
            "podManagementPolicy": "Parallel",
            "serviceName": headless_name(owner),
            "selector": {"matchLabels": {WORKSPACE_LABEL: owner.name}},
            "persistentVolumeClaimRetentionPolicy": {
                "whenScaled": "Retain",
                "whenDeleted": "Delete",
            },
            "template": template,
        },
    }


def template_statefulset(
    owner: Owner,
    template: Mapping[str, Any],
    *,
    replicas: int,
    revision: str,
    node_selector_labels: Mapping[str, str],
    provisioned: bool,
    pinned_nodes: Sequence[str] = (),
    preferred_nodes: Sequence[str] = (),
    spot_toleration: bool = False,
    inference_set: str | None = None,
) -> dict[str, Any]:
    """``inference.template`` (the user's PodTemplateSpec) as the inference StatefulSet.

    As upstream does, the pods get the Workspace label (the selector), the node affinity to
    the Workspace's nodes (ANDed into each of the template's own required terms, which stay
    ORed) and the GPU tolerations; a replica of an InferenceSet also gets the set's label (its
    scale selector and Service find the pods by it); everything else is the user's, as written.
    """
    tpl = copy.deepcopy(dict(template))
    meta = tpl.setdefault("metadata", {})
    meta["labels"] = {**(meta.get("labels") or {}), WORKSPACE_LABEL: owner.name}
    if inference_set:
        meta["labels"][C.LABEL_INFERENCESET_CREATED_BY] = inference_set
    meta["annotations"] = {**(meta.get("annotations") or {}), REVISION_ANNOTATION: revision}
    spec = tpl.setdefault("spec", {})
    theirs = list(spec.get("tolerations") or [])
    spec["tolerations"] = theirs + [t for t in tolerations(spot=spot_toleration) if t not in theirs]
    ours = node_affinity(
        owner,
        node_selector_labels,
        provisioned=provisioned,
        pinned_nodes=pinned_nodes,
        preferred_nodes=preferred_nodes,
    )
    if ours is not None:
        node = spec.setdefault("affinity", {}).setdefault("nodeAffinity", {})
        wanted = ours["nodeAffinity"]
        if "requiredDuringSchedulingIgnoredDuringExecution" in wanted:
            required = node.setdefault("requiredDuringSchedulingIgnoredDuringExecution", {})
            own_terms = wanted["requiredDuringSchedulingIgnoredDuringExecution"]
            required["nodeSelectorTerms"] = [
                _and_terms(term, own)
                for term in required.get("nodeSelectorTerms") or [{}]
                for own in own_terms["nodeSelectorTerms"]
            ]
        for pref in wanted.get("preferredDuringSchedulingIgnoredDuringExecution") or ():
            prefs = node.setdefault("preferredDuringSchedulingIgnoredDuringExecution", [])
            if pref not in prefs:
                prefs.append(pref)
    return _statefulset(owner, replicas, revision, tpl)


def _and_terms(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    """One node selector term requiring both ``a`` and ``b``."""
    out = dict(a)
    for key in ("matchExpressions", "matchFields"):
        both = [*(a.get(key) or []), *(b.get(key) or [])]
        if both:
            out[key] = both
    return out
