"""Group/version/kind identity of a resource type."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class GVK:
    """A resource type; the plural and scope come from discovery (see ``Client.resource``)."""

    group: str
    version: str
    kind: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @classmethod
    def from_api_version(cls, api_version: str, kind: str) -> GVK:
        group, _, version = api_version.rpartition("/")
        return cls(group, version, kind)

    def __str__(self) -> str:
        return f"{self.api_version}, Kind={self.kind}"


@dataclass(frozen=True, slots=True)
class Resource:
    """What discovery says about a GVK: where it lives in the REST tree."""

    gvk: GVK
    plural: str
    namespaced: bool
    subresources: frozenset[str] = frozenset()

    def path(self, namespace: str | None = None, name: str | None = None) -> str:
        """The REST path of the collection, or of one object when ``name`` is given."""
        base = f"/apis/{self.gvk.group}/{self.gvk.version}" if self.gvk.group else "/api/v1"
        if self.gvk.group == "" and self.gvk.version != "v1":
            base = f"/api/{self.gvk.version}"
        if self.namespaced and namespace:
            base = f"{base}/namespaces/{namespace}"
        base = f"{base}/{self.plural}"
        return f"{base}/{name}" if name else base


# Commonly used built-in kinds, for convenience.
CONFIGMAP = GVK("", "v1", "ConfigMap")
POD = GVK("", "v1", "Pod")
SERVICE = GVK("", "v1", "Service")
SECRET = GVK("", "v1", "Secret")
NODE = GVK("", "v1", "Node")
NAMESPACE = GVK("", "v1", "Namespace")
EVENT = GVK("", "v1", "Event")
STATEFULSET = GVK("apps", "v1", "StatefulSet")
DEPLOYMENT = GVK("apps", "v1", "Deployment")
STORAGE_CLASS = GVK("storage.k8s.io", "v1", "StorageClass")
JOB = GVK("batch", "v1", "Job")
LEASE = GVK("coordination.k8s.io", "v1", "Lease")
