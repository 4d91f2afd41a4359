"""The kaito.sh Workspace: resource + inference | tuning + status, with no spec wrapper.

v1alpha1 and v1beta1 share one wire shape (the CRD serves both with conversion None), so
the field types live here and the versioned modules only pin apiVersion.  Structural rules
ride along as CEL (x-kubernetes-validations) so the API server enforces them itself; rules
that need the model catalog or the cluster live in :mod:`kaito.webhook`.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import ConfigDict, Field

from kaito.api.constants import MAX_ADAPTERS
from kaito.api.meta import Condition, KubeModel, LabelSelector, ObjectMeta, Schemaless

DNS1123_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
STRENGTH_PATTERN = r"^(0([.][0-9]+)?|1([.]0+)?)$"


def _rules(*rules: dict[str, str]) -> dict[str, Any]:
    return {"x-kubernetes-validations": list(rules)}


def _rule(
    rule: str, message: str, field_path: str | None = None, reason: str | None = None
) -> dict[str, str]:
    out = {"rule": rule, "message": message}
    if field_path:
        out["fieldPath"] = field_path
    if reason:
        out["reason"] = reason
    return out


SecretName = Annotated[str, Field(max_length=253)]
Url = Annotated[str, Field(max_length=2048)]


class DataSource(KubeModel):
    """Where data comes from: URLs, a container image, or a volume (one of them for tuning)."""

    name: str | None = Field(
        default=None,
        max_length=253,
        json_schema_extra=_rules(
            _rule(
                f"self.matches('{DNS1123_SUBDOMAIN}')",
                "must be a DNS-1123 subdomain: lower-case letters, digits, '-' and '.', "
                "starting and ending with a letter or digit (e.g. falcon-7b-adapter)",
            )
        ),
    )
    """Name of the data; for adapters it names the adapter and must be unique (DNS-1123)."""
    urls: list[Url] | None = Field(default=None, max_length=1000)
    """http(s) URLs of files to download (e.g. a parquet dataset)."""
    volume_source: Schemaless | None = None
    """A Kubernetes VolumeSource holding the data, mounted as is."""
    image: str | None = Field(default=None, max_length=1024)
    """A container image (OCI artifact) holding the data, e.g. an adapter image."""
    image_pull_secrets: list[SecretName] | None = Field(default=None, max_length=64)
    """Names of docker-registry Secrets used to pull image."""


class DataDestination(KubeModel):
    """Where tuning output goes: a container image pushed to a registry, or a volume."""

    model_config: ClassVar[ConfigDict] = ConfigDict(
        json_schema_extra=_rules(
            _rule(
                "has(self.image) != has(self.volumeSource)",
                "set exactly one of output.image or output.volumeSource",
            ),
            _rule(
                "!has(self.image) || (has(self.imagePushSecret) && self.imagePushSecret != '')",
                "output.image requires output.imagePushSecret (a docker-registry Secret with "
                "push rights)",
                field_path=".imagePushSecret",
            ),
        )
    )

    volume_source: Schemaless | None = None
    """A Kubernetes VolumeSource that receives the tuned adapter."""
    image: str | None = Field(default=None, max_length=1024)
    """Image reference the tuned adapter is pushed to."""
    image_push_secret: str | None = Field(default=None, max_length=253)
    """docker-registry Secret with push rights for image; required with image."""


class PresetOptions(KubeModel):
    """Optional settings of a preset model."""

    image: str | None = Field(default=None, max_length=1024)
    """Deprecated: image of a private preset."""
    image_pull_secrets: list[SecretName] | None = Field(default=None, max_length=64)
    """Deprecated: Secrets for pulling a private preset image."""
    model_access_secret: str | None = Field(default=None, max_length=253)
    """Secret with key HF_TOKEN, for models whose download needs authentication."""


class PresetSpec(KubeModel):
    """A model from Kaito's catalog, chosen by name."""

    model_config: ClassVar[ConfigDict] = ConfigDict(
        json_schema_extra=_rules(
            _rule(
                "self.name == oldSelf.name",
                "preset.name is immutable; create a new Workspace to change the model",
                field_path=".name",
            )
        )
    )

    name: str = Field(min_length=1, max_length=256)
    """Preset model name, e.g. phi-3-mini-4k-instruct (kubectl kaito models lists them)."""
    access_mode: Literal["public", "private"] | None = None
    """Deprecated: whether the preset image is public or private."""
    preset_options: PresetOptions | None = None
    """Optional settings: model access secret, (deprecated) private image."""


class AdapterSpec(KubeModel):
    """A LoRA adapter loaded on top of the preset model."""

    model_config: ClassVar[ConfigDict] = ConfigDict(
        json_schema_extra=_rules(
            _rule(
                "has(self.source) && has(self.source.name)",
                "each adapter needs source.name (a DNS-1123 name, unique in the Workspace)",
                field_path=".source",
            )
        )
    )

    source: DataSource | None = None
    """Where the adapter comes from (image or volume) and its name."""
    strength: str | None = Field(
        default=None,
        max_length=32,
        json_schema_extra=_rules(
            _rule(
                f"self.matches('{STRENGTH_PATTERN}')",
                'strength must be a decimal string between 0 and 1, e.g. "0.5" or "1.0"',
            )
        ),
    )
    """Adapter weight as a decimal string in [0, 1], e.g. "1.0"."""


class InferenceSpec(KubeModel):
    """Serve a model: a catalog preset (optionally with adapters) or your own pod template."""

    model_config: ClassVar[ConfigDict] = ConfigDict(
        json_schema_extra=_rules(
            _rule(
                "has(self.preset) != has(self.template)",
                "set exactly one of inference.preset or inference.template",
            ),
            _rule(
                "has(self.preset) == has(oldSelf.preset) && has(self.template) == "
                "has(oldSelf.template)",
                "inference.preset and inference.template cannot be added or removed after creation",
            ),
            _rule(
                "!has(self.adapters) || self.adapters.all(a, !has(a.source) || "
                "!has(a.source.name) || self.adapters.exists_one(b, has(b.source) && "
                "has(b.source.name) && b.source.name == a.source.name))",
                "adapter names (adapters[].source.name) must be unique",
                field_path=".adapters",
            ),
        )
    )

    preset: PresetSpec | None = None
    """A catalog model by name; mutually exclusive with template."""
    template: Schemaless | None = None
    """A custom PodTemplateSpec run as the inference workload; exclusive with preset."""
    config: str | None = Field(default=None, max_length=253)
    """ConfigMap in the same namespace with key inference_config.yaml (vLLM settings)."""
    adapters: list[AdapterSpec] | None = Field(default=None, max_length=MAX_ADAPTERS)
    """LoRA adapters to load, at most 10, with unique names."""


class TuningSpec(KubeModel):
    """Fine-tune a preset model with LoRA or QLoRA; the result goes to output."""

    model_config: ClassVar[ConfigDict] = ConfigDict(
        json_schema_extra=_rules(
            _rule(
                "self.method == oldSelf.method",
                "tuning.method is immutable",
                field_path=".method",
            ),
            _rule(
                "has(self.input.name) == has(oldSelf.input.name) && (!has(self.input.name) || "
                "self.input.name == oldSelf.input.name)",
                "tuning.input.name is immutable; create a new Workspace to tune on other data",
                field_path=".input.name",
            ),
        )
    )

    preset: PresetSpec
    """The catalog model to tune."""
    method: Literal["lora", "qlora"]
    """Tuning method: lora or qlora."""
    config: str | None = Field(default=None, max_length=253)
    """ConfigMap with key training_config.yaml; defaults to the method's template."""
    input: DataSource = Field(
        json_schema_extra=_rules(
            _rule(
                "(has(self.urls) ? 1 : 0) + (has(self.image) ? 1 : 0) + "
                "(has(self.volumeSource) ? 1 : 0) == 1",
                "set exactly one of input.urls, input.image or input.volumeSource",
            )
        )
    )
    """Training data: exactly one of urls, image or volumeSource."""
    output: DataDestination
    """Where the tuned adapter goes: image (+ imagePushSecret) or volumeSource."""


class PartitionSpec(KubeModel):
    """GPU partitioning on bring-your-own nodes."""

    model_config: ClassVar[ConfigDict] = ConfigDict(
        json_schema_extra=_rules(
            _rule(
                "self.mode == 'mig' ? !has(self.count) : (has(self.count) && !has(self.profile))",
                "mig takes a profile and no count; accelerator takes a count and no profile",
            )
        )
    )

    mode: Literal["mig", "accelerator"]
    """Partitioning mode: mig or accelerator."""
    profile: str | None = Field(default=None, max_length=64)
    """MIG profile such as 1g.10gb (mig only)."""
    count: int | None = Field(default=None, ge=1)
    """Number of accelerator partitions (accelerator only)."""


class ResourceSpec(KubeModel):
    """The nodes a Workspace runs on: an instance type to provision, or labelled BYO nodes."""

    model_config: ClassVar[ConfigDict] = ConfigDict(
        json_schema_extra=_rules(
            _rule(
                "!has(oldSelf.instanceType) || (has(self.instanceType) && "
                "self.instanceType == oldSelf.instanceType)",
                "resource.instanceType is immutable once set",
                field_path=".instanceType",
            ),
            _rule(
                "self.labelSelector == oldSelf.labelSelector",
                "resource.labelSelector is immutable",
                field_path=".labelSelector",
            ),
            _rule(
                "has(self.count) == has(oldSelf.count) && (!has(self.count) || "
                "self.count == oldSelf.count)",
                "resource.count is immutable",
                field_path=".count",
            ),
            _rule(
                "has(self.partition) == has(oldSelf.partition) && (!has(self.partition) || "
                "self.partition == oldSelf.partition)",
                "resource.partition is immutable; create a new Workspace to change it",
                field_path=".partition",
            ),
        )
    )

    count: int | None = Field(default=None, ge=0, json_schema_extra={"default": 1})
    """Deprecated: node count; 0 or unset lets Kaito size vLLM Workspaces (it always does)."""
    instance_type: str | None = Field(default=None, min_length=1, max_length=256)
    """GPU VM size to provision, e.g. Standard_NC24ads_A100_v4; omit for bring-your-own nodes."""
    label_selector: LabelSelector
    """Selects the nodes for this Workspace; matchLabels are also put on provisioned nodes."""
    preferred_nodes: list[Annotated[str, Field(max_length=253)]] | None = Field(
        default=None, max_length=1000
    )
    """Deprecated: names of existing nodes to prefer."""
    partition: PartitionSpec | None = None
    """GPU partitioning (MIG or accelerator) for bring-your-own nodes."""


class Metric(KubeModel):
    """One benchmark figure."""

    description: str | None = None
    """What was measured, e.g. stress/high-concurrency."""
    value: str | None = None
    """The measured value."""
    unit: str | None = None
    """Unit of value, e.g. tokens/min."""
    config: dict[str, str] | None = None
    """Benchmark settings (engine, engineVersion, inputTokens, ...)."""


class Performance(KubeModel):
    """Benchmark results of the running model."""

    metrics: dict[str, Metric] | None = None
    """Metric name (e.g. peakTokensPerMinute) to value."""


class WorkspaceStatus(KubeModel):
    """Observed state, written by the controller."""

    worker_nodes: list[str] | None = None
    """Sorted names of the nodes serving this Workspace."""
    conditions: list[Condition] | None = Field(
        default=None,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    """ResourceReady, InferenceReady, JobStarted, WorkspaceSucceeded and friends."""
    state: str | None = None
    """Pending, Ready or NotReady (inference); Running, Succeeded or Failed (tuning)."""
    target_node_count: int | None = Field(default=None, json_schema_extra={"format": "int32"})
    """Nodes this Workspace needs, set once by the estimator."""
    performance: Performance | None = None
    """Benchmark results."""


class WorkspaceBase(KubeModel):
    """Fields shared by every Workspace version (the wire shape is identical)."""

    model_config: ClassVar[ConfigDict] = ConfigDict(
        json_schema_extra=_rules(
            _rule(
                "has(self.inference) != has(self.tuning)",
                "set exactly one of inference or tuning",
                field_path=".inference",
            ),
            _rule(
                "has(self.inference) == has(oldSelf.inference) && "
                "has(self.tuning) == has(oldSelf.tuning)",
                "a Workspace cannot switch between inference and tuning; create a new one",
                field_path=".tuning",
            ),
        )
    )

    api_version: str
    """kaito.sh/v1alpha1 or kaito.sh/v1beta1."""
    kind: Literal["Workspace"] = "Workspace"
    """Kind: Workspace."""
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    """Standard object metadata."""
    resource: ResourceSpec
    """GPU nodes for the Workspace."""
    inference: InferenceSpec | None = None
    """Serve a model; exclusive with tuning."""
    tuning: TuningSpec | None = None
    """Fine-tune a model; exclusive with inference."""
    status: WorkspaceStatus | None = None
    """Observed state."""

    @property
    def name(self) -> str:
        return self.metadata.name or ""

    @property
    def namespace(self) -> str:
        return self.metadata.namespace or ""
