"""Generate the CustomResourceDefinitions from the pydantic models.

``python -m kaito.api.crdgen`` writes one YAML per CRD into ``manifests/crd/``;
``--check`` exits non-zero when the committed files differ from what the models produce.
The pydantic JSON Schema is turned into a Kubernetes structural schema: references are
inlined, ``Optional`` unions collapsed, titles dropped, and CEL rules carried over.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from kaito.api import constants as c
from kaito.api.inferenceset import InferenceSet, InferenceSetV1Alpha1
from kaito.api.karpenter import Machine, NodeClaim
from kaito.api.v1alpha1 import Workspace as WorkspaceV1Alpha1
from kaito.api.v1beta1 import Workspace as WorkspaceV1Beta1

Schema = dict[str, Any]

PART_OF = {"app.kubernetes.io/part-of": "kaito-py"}
_DROP = {"title", "$defs"}


class _Dumper(yaml.SafeDumper):
    """Plain YAML: no anchors/aliases, so every schema node reads on its own."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _merge(base: Schema, extra: Schema) -> Schema:
    """Overlay a field's own keys onto the (inlined) schema of its type."""
    out = dict(base)
    for key, value in extra.items():
        if key == "x-kubernetes-validations":
            out[key] = [*out.get(key, []), *value]
        else:
            out[key] = value
    return out


def to_structural(schema: Schema, defs: dict[str, Schema]) -> Schema:
    """Turn one pydantic JSON Schema node into a Kubernetes structural schema node."""
    node = {k: v for k, v in schema.items() if k not in _DROP}
    if node.get("default", 0) is None:
        del node["default"]
    if "$ref" in node:
        target = to_structural(defs[node.pop("$ref").rsplit("/", 1)[-1]], defs)
        node = _merge(target, {k: v for k, v in node.items()})
    if "anyOf" in node:
        branches = [b for b in node["anyOf"] if b != {"type": "null"}]
        if len(branches) < len(node["anyOf"]):  # Optional[X]: absent means unset
            rest = {k: v for k, v in node.items() if k != "anyOf"}
            if len(branches) == 1:
                node = _merge(to_structural(branches[0], defs), rest)
            else:
                node = {**rest, "anyOf": branches}
    if isinstance(node.get("additionalProperties"), bool):
        del node["additionalProperties"]
    elif isinstance(node.get("additionalProperties"), dict):
        node["additionalProperties"] = to_structural(node["additionalProperties"], defs)
    if "properties" in node:
        node["properties"] = {
            name: to_structural(prop, defs) for name, prop in node["properties"].items()
        }
    if "items" in node:
        node["items"] = to_structural(node["items"], defs)
    first = [k for k in ("description", "type") if k in node]
    return {**{k: node[k] for k in first}, **{k: v for k, v in node.items() if k not in first}}


def openapi_schema(model: type[BaseModel]) -> Schema:
    """The openAPIV3Schema of a top-level kind."""
    raw = model.model_json_schema(by_alias=True)
    schema = to_structural(raw, raw.get("$defs", {}))
    props = schema["properties"]
    props["apiVersion"] = {
        "type": "string",
        "description": "Versioned schema of this object, e.g. "
        + str(model.model_fields["api_version"].default)
        + ".",
    }
    props["kind"] = {"type": "string", "description": "Kind of this object."}
    props["metadata"] = {"type": "object"}
    return schema


def _condition_column(name: str, condition: str, priority: int = 0) -> Schema:
    col: Schema = {
        "name": name,
        "type": "string",
        "jsonPath": f'.status.conditions[?(@.type=="{condition}")].status',
        "description": f"Status of the {condition} condition.",
    }
    if priority:
        col["priority"] = priority
    return col


AGE = {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}


def workspace_columns(version: str) -> list[Schema]:
    """v1alpha1 shows the seed's columns; v1beta1 adds TargetNodeCount and State."""
    cols: list[Schema] = [
        {
            "name": "Instance",
            "type": "string",
            "jsonPath": ".resource.instanceType",
            "description": "GPU instance type.",
        },
        _condition_column("ResourceReady", c.ConditionType.RESOURCE_READY),
        _condition_column("InferenceReady", c.ConditionType.INFERENCE_READY),
    ]
    if version == c.V1BETA1:
        cols.append(_condition_column("JobStarted", c.ConditionType.JOB_STARTED, priority=1))
    cols.append(_condition_column("WorkspaceReady", c.ConditionType.WORKSPACE_SUCCEEDED))
    if version == c.V1BETA1:
        cols += [
            {
                "name": "TargetNodeCount",
                "type": "integer",
                "jsonPath": ".status.targetNodeCount",
                "description": "Nodes the Workspace needs.",
            },
            {
                "name": "State",
                "type": "string",
                "jsonPath": ".status.state",
                "description": "Summary state.",
            },
        ]
    cols.append(AGE)
    return cols


def _crd(  # noqa: PLR0917 - one call site per CRD, read as a table
    group: str,
    kind: str,
    plural: str,
    scope: str,
    versions: list[Schema],
    short_names: list[str] | None = None,
    categories: list[str] | None = None,
    labels: dict[str, str] | None = None,
) -> Schema:
    names: Schema = {
        "kind": kind,
        "listKind": f"{kind}List",
        "plural": plural,
        "singular": kind.lower(),
    }
    if short_names:
        names["shortNames"] = short_names
    if categories:
        names["categories"] = categories
    spec: Schema = {"group": group, "names": names, "scope": scope}
    if len(versions) > 1:
        spec["conversion"] = {"strategy": "None"}
    spec["versions"] = versions
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}", "labels": {**PART_OF, **(labels or {})}},
        "spec": spec,
    }


def _version(
    name: str,
    schema: Schema,
    storage: bool,
    columns: list[Schema],
    scale: Schema | None = None,
) -> Schema:
    subresources: Schema = {"status": {}}
    if scale is not None:
        subresources["scale"] = scale
    return {
        "name": name,
        "served": True,
        "storage": storage,
        "schema": {"openAPIV3Schema": copy.deepcopy(schema)},
        "subresources": subresources,
        "additionalPrinterColumns": columns,
    }


def workspace_crd() -> Schema:
    alpha = openapi_schema(WorkspaceV1Alpha1)
    beta = openapi_schema(WorkspaceV1Beta1)
    return _crd(
        c.GROUP,
        c.WORKSPACE_KIND,
        c.WORKSPACE_PLURAL,
        "Namespaced",
        [
            _version(c.V1ALPHA1, alpha, False, workspace_columns(c.V1ALPHA1)),
            _version(c.V1BETA1, beta, True, workspace_columns(c.V1BETA1)),
        ],
        short_names=["wk", "wks"],
        categories=["workspace"],
    )


INFERENCESET_COLUMNS: list[Schema] = [
    {
        "name": "Replicas",
        "type": "integer",
        "jsonPath": ".spec.replicas",
        "description": "Desired replica Workspaces.",
    },
    {
        "name": "ReadyReplicas",
        "type": "integer",
        "jsonPath": ".status.readyReplicas",
        "description": "Replicas ready to serve.",
    },
    AGE,
    {
        "name": "UpdatedReplicas",
        "type": "integer",
        "jsonPath": ".status.updatedReplicas",
        "description": "Replicas made from the current template.",
        "priority": 1,
    },
    {
        "name": "Selector",
        "type": "string",
        "jsonPath": ".status.selector",
        "description": "Label selector of the replicas' pods.",
        "priority": 1,
    },
]
# `kubectl scale` and the HorizontalPodAutoscaler read and write the replica count here.
INFERENCESET_SCALE: Schema = {
    "specReplicasPath": ".spec.replicas",
    "statusReplicasPath": ".status.replicas",
    "labelSelectorPath": ".status.selector",
}


def without_transition_rules(schema: Schema) -> Schema:
    """The schema minus the CEL rules that compare with ``oldSelf``.

    A Workspace may not change its model or switch preset/template; an InferenceSet may, since
    its replicas are replaced one at a time, so its copy of the inference schema drops them.
    """
    node = dict(schema)
    rules = [r for r in node.get("x-kubernetes-validations", []) if "oldSelf" not in r["rule"]]
    if rules:
        node["x-kubernetes-validations"] = rules
    else:
        node.pop("x-kubernetes-validations", None)
    if "properties" in node:
        node["properties"] = {k: without_transition_rules(v) for k, v in node["properties"].items()}
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            node[key] = without_transition_rules(node[key])
    return node


def inferenceset_crd() -> Schema:
    """Both versions upstream serves; v1beta1 (adds template.resource.partition) is stored."""
    versions = []
    for version, model, storage in (
        (c.V1ALPHA1, InferenceSetV1Alpha1, False),
        (c.V1BETA1, InferenceSet, True),
    ):
        schema = openapi_schema(model)
        template = schema["properties"]["spec"]["properties"]["template"]["properties"]
        template["inference"] = without_transition_rules(template["inference"])
        versions.append(
            _version(version, schema, storage, INFERENCESET_COLUMNS, scale=INFERENCESET_SCALE)
        )
    return _crd(
        c.GROUP,
        c.INFERENCESET_KIND,
        c.INFERENCESET_PLURAL,
        "Namespaced",
        versions,
        short_names=["is", "isets"],
        categories=["inferenceset"],
    )


def _label_column(name: str, label: str, priority: int = 0) -> Schema:
    col: Schema = {
        "name": name,
        "type": "string",
        "jsonPath": ".metadata.labels." + label.replace(".", "\\."),
    }
    if priority:
        col["priority"] = priority
    return col


def nodeclaim_crd() -> Schema:
    columns = [
        _label_column("Type", c.LABEL_INSTANCE_TYPE),
        _label_column("Capacity", "karpenter.sh/capacity-type"),
        _label_column("Zone", "topology.kubernetes.io/zone"),
        {"name": "Node", "type": "string", "jsonPath": ".status.nodeName"},
        _condition_column("Ready", c.NodeClaimConditionType.READY),
        AGE,
        {"name": "ID", "type": "string", "jsonPath": ".status.providerID", "priority": 1},
        _label_column("NodePool", c.LABEL_KARPENTER_NODEPOOL, priority=1),
        {
            "name": "NodeClass",
            "type": "string",
            "jsonPath": ".spec.nodeClassRef.name",
            "priority": 1,
        },
    ]
    return _crd(
        c.KARPENTER_GROUP,
        "NodeClaim",
        "nodeclaims",
        "Cluster",
        [_version(c.NODECLAIM_VERSION, openapi_schema(NodeClaim), True, columns)],
        categories=["karpenter"],
        labels={c.LABEL_COMPAT_CRD: "true"},
    )


def machine_crd() -> Schema:
    columns = [
        _label_column("Type", c.LABEL_INSTANCE_TYPE),
        _label_column("Zone", "topology.kubernetes.io/zone"),
        {"name": "Node", "type": "string", "jsonPath": ".status.nodeName"},
        _condition_column("Ready", c.MachineConditionType.READY),
        AGE,
        _label_column("Provisioner", c.LABEL_KARPENTER_PROVISIONER_NAME, priority=1),
    ]
    return _crd(
        c.KARPENTER_GROUP,
        "Machine",
        "machines",
        "Cluster",
        [_version(c.MACHINE_VERSION, openapi_schema(Machine), True, columns)],
        categories=["karpenter"],
        labels={c.LABEL_COMPAT_CRD: "true"},
    )


def render() -> dict[str, str]:
    """File name to YAML text for every CRD we ship."""
    crds = [workspace_crd(), inferenceset_crd(), nodeclaim_crd(), machine_crd()]
    out: dict[str, str] = {}
    for crd in crds:
        group = crd["spec"]["group"]
        plural = crd["spec"]["names"]["plural"]
        text = yaml.dump(crd, Dumper=_Dumper, sort_keys=False, width=100, allow_unicode=True)
        out[f"{group}_{plural}.yaml"] = (
            "# Generated by `python -m kaito.api.crdgen`; do not edit.\n" + text
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, default=Path("manifests/crd"))
    parser.add_argument("--check", action="store_true", help="fail if files are out of date")
    args = parser.parse_args(argv)
    stale = []
    for name, text in render().items():
        path: Path = args.out / name
        current = path.read_text() if path.exists() else None
        if current == text:
            continue
        stale.append(str(path))
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if args.check and stale:
        print("out of date (run python -m kaito.api.crdgen):", *stale, sep="\n  ")
        return 1
    for path_name in stale:
        print("wrote", path_name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
