"""Well-known names of the kaito.sh API: group, kinds, labels, annotations, conditions, reasons.

Values are upstream Kaito's, so objects and nodes stay interchangeable with its tooling.
"""

from __future__ import annotations

import enum

GROUP = "kaito.sh"
WORKSPACE_KIND = "Workspace"
WORKSPACE_PLURAL = "workspaces"
INFERENCESET_KIND = "InferenceSet"
INFERENCESET_PLURAL = "inferencesets"
V1ALPHA1 = "v1alpha1"
V1BETA1 = "v1beta1"
STORAGE_VERSION = V1BETA1

# --- labels ----------------------------------------------------------------------------------
LABEL_WORKSPACE_NAME = "kaito.sh/workspace"
"""On NodeClaims, nodes, pods, workloads: the owning Workspace's name."""
LABEL_WORKSPACE_NAMESPACE = "kaito.sh/workspacenamespace"
"""On NodeClaims and nodes: the owning Workspace's namespace."""
LABEL_RAGENGINE_NAME = "kaito.sh/ragengine"
LABEL_RAGENGINE_NAMESPACE = "kaito.sh/ragenginenamespace"
LABEL_MACHINE_TYPE = "kaito.sh/machine-type"
"""Set on provisioned nodes: ``gpu`` when the VM size is an N-series GPU size, else ``cpu``."""
LABEL_CREATION_TIMESTAMP = "kaito.sh/creation-timestamp"
LABEL_UPGRADE_TO_VERSION = "kaito.sh/upgrade-to-version"
LABEL_REVISION_WORKSPACE_NAME = "workspace.kaito.io/name"
"""On ControllerRevisions: the Workspace they record."""
LABEL_KARPENTER_WORKSPACE_NAME = "karpenter.kaito.sh/workspace-name"
LABEL_KARPENTER_WORKSPACE_NAMESPACE = "karpenter.kaito.sh/workspace-namespace"
LABEL_KARPENTER_INFERENCESET = "karpenter.kaito.sh/inferenceset"
LABEL_KARPENTER_INFERENCESET_NAMESPACE = "karpenter.kaito.sh/inferenceset-namespace"
LABEL_INFERENCESET_CREATED_BY = "inferenceset.kaito.sh/created-by"
"""On an InferenceSet's replica Workspaces and their pods: the set's name (its scale selector)."""
LABEL_KARPENTER_NODEPOOL = "karpenter.sh/nodepool"
LABEL_KARPENTER_PROVISIONER_NAME = "karpenter.sh/provisioner-name"
"""v1alpha5 Machine era: the Karpenter Provisioner a Machine belongs to."""
LABEL_INSTANCE_TYPE = "node.kubernetes.io/instance-type"
LABEL_OS = "kubernetes.io/os"
LABEL_ARCH = "kubernetes.io/arch"
LABEL_AZURE_SKU_NAME = "karpenter.azure.com/sku-name"
LABEL_ACCELERATOR = "accelerator"
ACCELERATOR_NVIDIA = "nvidia"
KAITO_NODEPOOL = "kaito"
"""The fake NodePool name on Kaito's NodeClaims, which keeps Karpenter's own scaling away."""

# GPU Feature Discovery labels read for bring-your-own nodes.
LABEL_GPU_PRODUCT = "nvidia.com/gpu.product"
LABEL_GPU_COUNT = "nvidia.com/gpu.count"
LABEL_GPU_MEMORY = "nvidia.com/gpu.memory"
"""MiB per GPU."""
GPU_LABELS = (LABEL_GPU_PRODUCT, LABEL_GPU_COUNT, LABEL_GPU_MEMORY)
RESOURCE_NVIDIA_GPU = "nvidia.com/gpu"

RESERVED_SELECTOR_KEYS = frozenset(
    {
        LABEL_WORKSPACE_NAME,
        LABEL_RAGENGINE_NAME,
        LABEL_WORKSPACE_NAMESPACE,
        LABEL_RAGENGINE_NAMESPACE,
        LABEL_KARPENTER_WORKSPACE_NAME,
        LABEL_KARPENTER_WORKSPACE_NAMESPACE,
        LABEL_KARPENTER_INFERENCESET,
        LABEL_KARPENTER_INFERENCESET_NAMESPACE,
    }
)
"""Keys Kaito owns; they are ignored in a user's ``resource.labelSelector.matchLabels``."""

# --- annotations -----------------------------------------------------------------------------
ANNOTATION_WORKSPACE_HASH = "workspace.kaito.io/hash"
"""sha256 of the JSON of resource+inference+tuning (on Workspace and ControllerRevision)."""
ANNOTATION_WORKSPACE_REVISION = "workspace.kaito.io/revision"
"""Revision number (on Workspace, StatefulSet and Job)."""
ANNOTATION_BYPASS_RESOURCE_CHECKS = "kaito.sh/bypass-resource-checks"
"""Present (any value): skip the GPU-memory fit check at admission."""
ANNOTATION_NODE_IMAGE_FAMILY = "kaito.sh/node-image-family"
NODE_IMAGE_FAMILIES = ("ubuntu", "azurelinux")
ANNOTATION_NODE_CLASS_NAME = "kaito.sh/node-class-name"
ANNOTATION_RUNTIME = "kaito.sh/runtime"
RUNTIMES = ("vllm", "transformers")
ANNOTATION_ENABLE_LB = "kaito.sh/enablelb"
"""Exactly ``"True"`` asks for a LoadBalancer Service."""
ANNOTATION_DISABLE_BENCHMARK = "kaito.sh/disable-benchmark"
ANNOTATION_PERFORMANCE_MODE = "kaito.sh/performance-mode"
PERFORMANCE_MODES = ("balanced", "interactivity", "throughput")
ANNOTATION_USE_LOCAL_WEIGHTS = "kaito.sh/use-local-weights"
ANNOTATION_MODEL_STREAMING = "kaito.sh/model-streaming"
ANNOTATION_KARPENTER_DO_NOT_DISRUPT = "karpenter.sh/do-not-disrupt"

ANNOTATION_INFERENCESET_TEMPLATE_HASH = "inferenceset.kaito.sh/template-hash"
"""On a replica Workspace: the hash of the InferenceSet template it was made from."""
# Autoscaling of an InferenceSet (upstream's keda-kaito-scaler annotations, on the set itself).
ANNOTATION_SCALE_AUTO_PROVISION = "scaledobject.kaito.sh/auto-provision"
ANNOTATION_SCALE_METRIC_NAME = "scaledobject.kaito.sh/metricName"
ANNOTATION_SCALE_THRESHOLD = "scaledobject.kaito.sh/threshold"
ANNOTATION_SCALE_MIN_REPLICAS = "scaledobject.kaito.sh/min-replicas"
ANNOTATION_SCALE_MAX_REPLICAS = "scaledobject.kaito.sh/max-replicas"
ANNOTATION_SCALE_EVALUATION_WINDOW = "scaledobject.kaito.sh/evaluationwindow"
ANNOTATION_SCALE_UP_COOLDOWN = "scaledobject.kaito.sh/scaleupcooldown"
ANNOTATION_SCALE_DOWN_COOLDOWN = "scaledobject.kaito.sh/scaledowncooldown"
ANNOTATION_SCALE_IDLE_SECONDS = "scaledobject.kaito.sh/idle-seconds"
"""Ours: with min-replicas "0", seconds without a request before the set scales to zero."""
ANNOTATION_SCALE_MANAGED_BY = "scaledobject.kaito.sh/managed-by"
"""On the HorizontalPodAutoscaler the operator made for a set."""
DEFAULT_SCALE_METRIC = "vllm:num_requests_waiting"

# --- finalizers, taints ----------------------------------------------------------------------
FINALIZER_WORKSPACE = "workspace.finalizer.kaito.sh"
FINALIZER_KARPENTER_TERMINATION = "karpenter.sh/termination"
"""Karpenter's finalizer on NodeClaims: the node goes before the claim does."""
GPU_TAINT_KEY = "sku"
GPU_TAINT_VALUE = "gpu"
GPU_TAINT_EFFECT = "NoSchedule"

# --- defaults and limits ---------------------------------------------------------------------
V1ALPHA1_DEFAULT_INSTANCE_TYPE = "Standard_NC24ads_A100_v4"
"""Upstream v1alpha1 fills this in when ``resource.instanceType`` is absent on create."""
MAX_ADAPTERS = 10
MAX_REVISION_HISTORY = 10
DEFAULT_ADAPTER_STRENGTH = "1.0"


class ConditionType(enum.StrEnum):
    """Workspace condition types."""

    NODE_CLAIM_READY = "NodeClaimReady"
    NODES_READY = "NodesReady"
    RESOURCE_READY = "ResourceReady"
    INFERENCE_READY = "InferenceReady"
    JOB_STARTED = "JobStarted"
    WORKSPACE_SUCCEEDED = "WorkspaceSucceeded"
    WORKSPACE_DELETING = "WorkspaceDeleting"
    BENCHMARK_COMPLETED = "BenchmarkCompleted"
    MODEL_MIRROR_READY = "ModelMirrorReady"
    SCALING_DOWN_COMPLETED = "ScalingDownCompleted"
    SERVICE_READY = "ServiceReady"
    INFERENCESET_READY = "InferenceSetReady"
    AUTOSCALER_READY = "AutoscalerReady"
    INSTANCE_TYPE_RESOLVED = "InstanceTypeResolved"
    """Ours: an instance type missing from Kaito's table, and where its figures came from."""


class Reason(enum.StrEnum):
    """Condition reasons the Workspace controller writes (upstream's strings)."""

    NODE_CLAIMS_READY = "NodeClaimsReady"
    NODE_CLAIM_NOT_READY = "NodeClaimNotReady"
    NODES_READY = "NodesReady"
    NODE_NOT_READY = "NodeNotReady"
    NODE_PLUGINS_NOT_READY = "NodePluginsNotReady"
    RESOURCE_STATUS_SUCCESS = "workspaceResourceStatusSuccess"
    RESOURCE_STATUS_NOT_READY = "workspaceResourceStatusNotReady"
    INFERENCE_STATUS_SUCCESS = "WorkspaceInferenceStatusSuccess"
    INFERENCE_STATUS_PENDING = "WorkspaceInferenceStatusPending"
    INFERENCE_STATUS_FAILED = "WorkspaceInferenceStatusFailed"
    IMAGE_PULL_ERROR = "ImagePullError"
    CONTAINER_CRASH_LOOP_BACK_OFF = "ContainerCrashLoopBackOff"
    CONTAINER_OOM_KILLED = "ContainerOOMKilled"
    CONTAINER_START_ERROR = "ContainerStartError"
    POD_EVICTED = "PodEvicted"
    NODE_DISK_PRESSURE = "NodeDiskPressure"
    NODE_MEMORY_PRESSURE = "NodeMemoryPressure"
    UNSCHEDULABLE = "Unschedulable"
    TUNING_JOB_STARTED = "WorkspaceTuningJobStatusStarted"
    TUNING_JOB_PENDING = "WorkspaceTuningJobStatusPending"
    TUNING_JOB_FAILED = "WorkspaceTuningJobStatusFailed"
    WORKSPACE_SUCCEEDED = "workspaceSucceeded"
    WORKSPACE_PENDING = "workspacePending"
    WORKSPACE_FAILED = "workspaceFailed"
    WORKSPACE_DELETED = "workspaceDeleted"
    BENCHMARK_FAILED = "BenchmarkFailed"


class WorkspaceState(enum.StrEnum):
    """status.state: Pending/Ready/NotReady (inference), Running/Succeeded/Failed (tuning)."""

    PENDING = "Pending"
    READY = "Ready"
    NOT_READY = "NotReady"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


class TuningMethod(enum.StrEnum):
    LORA = "lora"
    QLORA = "qlora"


class ModelImageAccessMode(enum.StrEnum):
    PUBLIC = "public"
    PRIVATE = "private"


# --- karpenter.sh ----------------------------------------------------------------------------
KARPENTER_GROUP = "karpenter.sh"
NODECLAIM_VERSION = "v1"
MACHINE_VERSION = "v1alpha5"
KAITO_NODECLASS_GROUP = "kaito.sh"
KAITO_NODECLASS_KIND = "KaitoNodeClass"
KAITO_NODECLASS_NAME = "default"
LABEL_COMPAT_CRD = "kaito.sh/compat-crd"
"""On the karpenter.sh CRDs we ship: marks them as ours, so a real Karpenter's are left alone."""


class NodeClaimConditionType(enum.StrEnum):
    """Karpenter NodeClaim lifecycle conditions (in order)."""

    LAUNCHED = "Launched"
    REGISTERED = "Registered"
    INITIALIZED = "Initialized"
    READY = "Ready"


class MachineConditionType(enum.StrEnum):
    """Karpenter v1alpha5 Machine lifecycle conditions."""

    LAUNCHED = "MachineLaunched"
    REGISTERED = "MachineRegistered"
    INITIALIZED = "MachineInitialized"
    READY = "Ready"
