"""Workspace specs generated from the CRD schema, valid and broken, for both API versions.

A strategy follows the generated CRD's openAPIV3Schema (types, enums, bounds, required
fields), drawing realistic values where the schema alone would give noise (catalog preset
names, known instance types, DNS names); about half of the specs then get one mutation that
the API must refuse (a wrong type, a missing required field, an out-of-range or unknown
value, both inference and tuning, ...). The mutation is recorded so a failure can be read.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from hypothesis import strategies as st

from kaito.presets import list_presets, list_skus

REPO = Path(__file__).resolve().parents[2]
CRD = REPO / "manifests" / "crd" / "kaito.sh_workspaces.yaml"
VERSIONS = ("v1alpha1", "v1beta1")

Json = Any
Draw = Callable[[st.SearchStrategy[Any]], Any]


def schemas() -> dict[str, dict[str, Any]]:
    crd = yaml.safe_load(CRD.read_text())
    return {v["name"]: v["schema"]["openAPIV3Schema"] for v in crd["spec"]["versions"]}


PRESETS = sorted(p.name for p in list_presets())
SKUS = sorted(s.name for s in list_skus())
DNS = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", max_size=11).map(lambda s: "n" + s)


@dataclass(frozen=True)
class Spec:
    """One generated Workspace (without metadata) and what was done to break it, if anything."""

    version: str
    body: dict[str, Any]
    mutation: str | None

    def manifest(self, name: str) -> dict[str, Any]:
        return {
            "apiVersion": f"kaito.sh/{self.version}",
            "kind": "Workspace",
            "metadata": {"name": name},
            **copy.deepcopy(self.body),
        }


def _string(draw: Draw, path: str, schema: dict[str, Any]) -> str:
    if "enum" in schema:
        return str(draw(st.sampled_from(schema["enum"])))
    leaf = path.rsplit(".", 1)[-1]
    if path.endswith("preset.name"):
        value = draw(st.one_of(st.sampled_from(PRESETS), DNS))
    elif leaf == "instanceType":
        value = draw(st.one_of(st.sampled_from(SKUS), st.sampled_from(SKUS), DNS))
    elif leaf == "strength":
        value = draw(st.sampled_from(["0", "0.5", "1", "1.0", "0.25", "2", "-1", "abc", ""]))
    elif leaf in ("image",):
        value = draw(st.sampled_from(["registry.local/kaito/adapter:1", "mcr.invalid/x:latest"]))
    elif leaf == "urls[]":
        value = draw(st.sampled_from(["https://example.invalid/data.parquet", "not a url"]))
    else:
        value = draw(DNS)
    low, high = int(schema.get("minLength", 0)), int(schema.get("maxLength", 253))
    return str(value)[:high] if len(str(value)) >= low else "x" * low


def _value(draw: Draw, path: str, schema: dict[str, Any], depth: int = 0) -> Json:
    kind = schema.get("type")
    if schema.get("x-kubernetes-preserve-unknown-fields") and not schema.get("properties"):
        leaf = path.rsplit(".", 1)[-1]
        if leaf == "template":
            return {"spec": {"containers": [{"name": "main", "image": "registry.local/app:1"}]}}
        return draw(st.sampled_from([{"emptyDir": {}}, {"configMap": {"name": "data"}}]))
    if kind == "object":
        out: dict[str, Any] = {}
        required = set(schema.get("required") or ())
        props = schema.get("properties") or {}
        for key, sub in props.items():
            odds = 12 if key == "template" else 4  # a template Workspace is rarely wanted
            if key in required or (depth < 4 and draw(st.integers(0, odds - 1)) == 0):
                out[key] = _value(draw, f"{path}.{key}", sub, depth + 1)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict) and not props:
            for _ in range(draw(st.integers(0, 2))):
                out[draw(DNS)] = _value(draw, f"{path}.*", extra, depth + 1)
        return out
    if kind == "array":
        count = draw(st.integers(0, min(2, int(schema.get("maxItems", 2)))))
        return [
            _value(draw, f"{path}[]", schema.get("items") or {}, depth + 1) for _ in range(count)
        ]
    if kind == "integer":
        low = int(schema.get("minimum", 0))
        return draw(st.integers(low, low + 2))
    if kind == "number":
        return draw(st.floats(0, 1))
    if kind == "boolean":
        return draw(st.booleans())
    return _string(draw, path, schema)


def _mutate(draw: Draw, body: dict[str, Any]) -> str:
    """Break the spec in one way the API must refuse; returns what was done."""
    choice = draw(
        st.sampled_from(
            [
                "wrong-type",
                "drop-resource",
                "both-modes",
                "count-zero",
                "bad-enum",
                "long-string",
                "unknown-instance-type",
                "unknown-preset",
                "bad-strength",
            ]
        )
    )
    mode = "inference" if "inference" in body else "tuning"
    if choice == "wrong-type":
        target = draw(
            st.sampled_from(["resource", "resource.count", "resource.instanceType", mode])
        )
        node = body
        *parents, leaf = target.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = draw(st.sampled_from([42, "text", ["a"], True]))
        if leaf == "count" and node[leaf] is True:
            node[leaf] = "text"
        return f"wrong-type {target}={node[leaf]!r}"
    if choice == "drop-resource":
        body.pop("resource", None)
        return choice
    if choice == "both-modes":
        body["inference"] = {"preset": {"name": PRESETS[0]}}
        body["tuning"] = {
            "preset": {"name": PRESETS[0]},
            "method": "qlora",
            "input": {"urls": ["https://example.invalid/d.parquet"]},
            "output": {"image": "registry.local/out:1"},
        }
        return choice
    if choice == "count-zero":
        body.setdefault("resource", {})["count"] = draw(st.integers(-3, 0))
        return f"count {body['resource']['count']}"
    if choice == "bad-enum":
        if mode == "tuning":
            body["tuning"]["method"] = "full-finetune"
            return "tuning.method=full-finetune"
        body["inference"].setdefault("preset", {"name": PRESETS[0]})["accessMode"] = "secret"
        return "inference.preset.accessMode=secret"
    if choice == "long-string":
        body.setdefault("resource", {})["instanceType"] = "S" * 300
        return "resource.instanceType 300 chars"
    if choice == "unknown-instance-type":
        body.setdefault("resource", {})["instanceType"] = "Standard_Nope_v9"
        return choice
    if choice == "unknown-preset":
        body.setdefault(mode, {})["preset"] = {"name": "no-such-model-xl"}
        return choice
    body["inference"] = {
        "preset": {"name": PRESETS[0]},
        "adapters": [{"source": {"name": "a", "image": "r.local/a:1"}, "strength": "7.5"}],
    }
    body.pop("tuning", None)
    return "adapter strength 7.5"


@st.composite
def workspace_specs(draw: Draw, schema_by_version: dict[str, dict[str, Any]]) -> Spec:
    version = draw(st.sampled_from(VERSIONS))
    top = schema_by_version[version]["properties"]
    body: dict[str, Any] = {"resource": _value(draw, "resource", top["resource"])}
    if draw(st.integers(0, 4)) == 0:
        body["tuning"] = _value(draw, "tuning", top["tuning"])
    else:
        body["inference"] = _value(draw, "inference", top["inference"])
        if "preset" not in body["inference"] and "template" not in body["inference"]:
            body["inference"]["preset"] = {"name": draw(st.sampled_from(PRESETS))}
    body["resource"].setdefault("instanceType", draw(st.sampled_from(SKUS)))
    mutation = _mutate(draw, body) if draw(st.booleans()) else None
    return Spec(version, body, mutation)
