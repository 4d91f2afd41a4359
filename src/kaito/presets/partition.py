"""GPU partitions on bring-your-own nodes: NVIDIA MIG profiles and whole-GPU (accelerator) slices.

A MIG slice is one non-shardable device with the profile's memory (``3g.40gb``: 40 GiB), asked
for as the extended resource ``nvidia.com/mig-<profile>``; an accelerator partition is ``count``
whole GPUs of the node.  The profile list is the one NVIDIA documents for A30, A100, H100, H200
and B200 (upstream Kaito's list).
"""

from __future__ import annotations

import re

from kaito.presets.skus import Sku

MIG_RESOURCE_PREFIX = "nvidia.com/mig-"
_PROFILE = re.compile(r"^(\d+)g\.(\d+(?:\.\d+)?)gb$")
KNOWN_MIG_PROFILES = (
    # A30 24 GB
    "1g.6gb", "2g.12gb", "4g.24gb",
    # A100 40 GB
    "1g.5gb", "2g.10gb", "3g.20gb", "4g.20gb", "7g.40gb",
    # A100 / H100 80 GB
    "1g.10gb", "1g.20gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb",
    # H100 94 GB
    "1g.12gb", "1g.24gb", "2g.24gb", "3g.47gb", "4g.47gb", "7g.94gb",
    # GH200 96 GB
    "3g.48gb", "4g.48gb", "7g.96gb",
    # H200 141 GB
    "1g.18gb", "1g.35gb", "2g.35gb", "3g.71gb", "4g.71gb", "7g.141gb",
    # B200 180 GB
    "1g.23gb", "1g.45gb", "2g.45gb", "3g.90gb", "4g.90gb", "7g.180gb",
)  # fmt: skip


def mig_profile_problem(profile: str | None) -> str | None:
    """Why `profile` is not a MIG profile we know (None: it is)."""
    if not profile:
        return "mig needs partition.profile, e.g. 3g.40gb"
    if not _PROFILE.match(profile) or profile not in KNOWN_MIG_PROFILES:
        return f"unknown MIG profile {profile!r}; known: {', '.join(sorted(KNOWN_MIG_PROFILES))}"
    return None


def mig_memory_gib(profile: str) -> int:
    """GiB of one slice (the profile's ``<n>gb``, rounded down as the driver reports it)."""
    match = _PROFILE.match(profile)
    if match is None:
        raise ValueError(f"not a MIG profile: {profile!r}")
    return int(float(match.group(2)))


def mig_resource(profile: str) -> str:
    return MIG_RESOURCE_PREFIX + profile


def partitioned(sku: Sku, mode: str, *, profile: str | None, count: int | None) -> Sku:
    """What one inference pod gets on a node described by `sku`: a MIG slice or `count` GPUs."""
    if mode == "mig" and profile:
        return sku.model_copy(
            update={
                "gpu_count": 1,
                "gpu_memory_gib": float(mig_memory_gib(profile)),
                "name": f"{sku.name} (MIG {profile})",
            }
        )
    if mode == "accelerator" and count:
        return sku.model_copy(update={"gpu_count": count})
    return sku
