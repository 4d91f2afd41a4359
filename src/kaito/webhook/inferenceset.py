"""Admission rules for InferenceSets that need the catalog (CEL in the CRD covers the rest).

As upstream does, the set is judged by the Workspace it would create: the replica from
:func:`kaito.api.inferenceset.child_workspace` goes through the Workspace rules, and each error
is reported at the InferenceSet's own field (``spec.template.inference.preset.name``, not
``inference.preset.name``).  The scaledobject.kaito.sh annotations and the maintenance window's
cron are checked too, so a typo is refused with the fix instead of surfacing later as a
condition.  Pure functions of the object, the operator's policy and the cluster view the
server looked up for the replica (as for a Workspace).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from kaito.api import WorkspaceBase
from kaito.api.inferenceset import InferenceSet, child_workspace, parse_inferenceset
from kaito.controllers import autoscaler
from kaito.webhook.validation import _loc, _short, check_spec, parse
from kaito.webhook.view import ClusterView, FieldError, Policy

CRON_FIELD = r"(\*|\?|[0-9A-Za-z,\-/*]+)"
CRON = re.compile(rf"^{CRON_FIELD}(\s+{CRON_FIELD}){{4}}$")


def _field(child_field: str) -> str:
    """Where a replica Workspace's field lives in the InferenceSet."""
    if child_field.startswith("resource.labelSelector"):
        return "spec.labelSelector" + child_field.removeprefix("resource.labelSelector")
    if child_field.startswith("metadata."):
        return "spec.template." + child_field
    if child_field.startswith(("inference", "resource")):
        return "spec.template." + child_field
    return child_field


def _parse(obj: Mapping[str, Any]) -> tuple[InferenceSet | None, list[FieldError]]:
    try:
        return parse_inferenceset(dict(obj)), []
    except ValidationError as exc:
        return None, [
            FieldError(_loc(tuple(e["loc"])), e["msg"].rstrip(".") + f" (got {_short(e)})")
            for e in exc.errors(include_url=False)[:20]
        ]


def replica(
    iset: InferenceSet, policy: Policy | None = None
) -> tuple[WorkspaceBase | None, list[FieldError]]:
    """The Workspace the controller would make for the set (parsed), or the set's errors.

    With bring-your-own nodes the replica carries no instance type, as the controller
    makes it (``InferenceSetSettings.byo``).
    """
    byo = (policy or Policy()).node_provisioner == "byo"
    child, errors = parse(child_workspace(iset, f"{iset.name or 'set'}-0", byo=byo))
    return child, [FieldError(_field(e.field), e.message) for e in errors]


def check_inferenceset(
    iset: InferenceSet, policy: Policy | None = None, view: ClusterView | None = None
) -> list[FieldError]:
    """The replica Workspace's rules (with the cluster `view` looked up for it, when given),
    the autoscaling annotations, the cron."""
    policy = policy or Policy()
    child, errors = replica(iset, policy)
    if child is not None:
        errors += [FieldError(_field(e.field), e.message) for e in check_spec(child, view, policy)]
    annotations = iset.metadata.annotations or {}
    if autoscaler.enabled(annotations):
        try:
            autoscaler.parse(annotations, limit_replicas=None)
            autoscaler.idle_seconds(annotations)
        except autoscaler.AnnotationError as exc:
            errors.append(FieldError(exc.field, exc.message))
    window = iset.spec.auto_upgrade.maintenance_window if iset.spec.auto_upgrade else None
    if window is not None and not CRON.match(window.schedule.strip()):
        errors.append(
            FieldError(
                "spec.autoUpgrade.maintenanceWindow.schedule",
                f"{window.schedule!r} is not a 5-field cron expression (minute hour day month "
                'weekday, UTC), e.g. "0 2 * * 6"',
            )
        )
    return errors


def parse_set(obj: Mapping[str, Any]) -> InferenceSet | None:
    """The set, or None when it does not parse (validate_inferenceset says why)."""
    return _parse(obj)[0] if isinstance(obj, Mapping) else None


def set_update_checked(obj: Mapping[str, Any], old: Mapping[str, Any] | None) -> bool:
    """Whether the rules run: not for a set being deleted, nor for an update that changes
    neither spec nor annotations (status, finalizers, labels)."""
    meta = obj.get("metadata")
    if isinstance(meta, Mapping) and meta.get("deletionTimestamp"):
        return False
    if isinstance(old, Mapping):
        old_meta = old.get("metadata") or {}
        new_meta = meta if isinstance(meta, Mapping) else {}
        if obj.get("spec") == old.get("spec") and new_meta.get("annotations") == old_meta.get(
            "annotations"
        ):
            return False
    return True


def validate_inferenceset(
    obj: Mapping[str, Any],
    old: Mapping[str, Any] | None,
    policy: Policy | None = None,
    view: ClusterView | None = None,
) -> list[FieldError]:
    """Field errors for an InferenceSet CREATE (old None) or UPDATE; empty means allowed.

    Updates that change neither spec nor annotations (status, finalizers, labels) and
    deletions always pass.
    """
    if not isinstance(obj, Mapping):
        return [FieldError("(root)", "the object must be a JSON object")]
    if not set_update_checked(obj, old):
        return []
    iset, errors = _parse(obj)
    if iset is None:
        return errors
    return check_inferenceset(iset, policy, view)
