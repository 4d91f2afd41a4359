"""API requests per client, read from the API server's audit log (bench/workspaces.py).

The benchmark gives each controller it runs its own client certificate (its own user), and
the API server logs every request of those users, and only theirs, at the Metadata level
when the response is complete.  Counting from the server's side works the same for our
operator, for upstream's Go controller (which exports no client request metrics) and for
the stand-in provider, and it sees what a client-side counter cannot: the answer's code.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

POLICY = """apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived", "ResponseStarted"]
rules:
  - level: Metadata
    users: [{users}]
  - level: None
"""


def policy(users: Iterable[str]) -> str:
    """An audit policy that records the given users' requests and nothing else."""
    return POLICY.format(users=", ".join(json.dumps(u) for u in users))


def apiserver_args(policy_file: Path, log_file: Path) -> list[str]:
    return [
        f"--audit-policy-file={policy_file}",
        f"--audit-log-path={log_file}",
        "--audit-log-format=json",
        "--audit-log-maxsize=0",  # no rotation: the reader follows one file
    ]


@dataclass(frozen=True)
class Request:
    """One completed API request."""

    user: str
    verb: str
    resource: str  # "nodes", "nodeclaims", "workspaces/status", ...
    code: int
    at: float  # when the server received it, seconds since the epoch


def _epoch(stamp: str) -> float:
    return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


class AuditLog:
    """Reads the log as it grows; keeps every request of the audited users."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._partial = b""
        self.requests: list[Request] = []

    def refresh(self) -> None:
        if not self.path.exists():
            return
        with self.path.open("rb") as f:
            f.seek(self._offset)
            data = f.read()
        self._offset += len(data)
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            if not line.strip():
                continue
            event = json.loads(line)
            ref = event.get("objectRef") or {}
            resource = ref.get("resource", "") + (
                "/" + ref["subresource"] if ref.get("subresource") else ""
            )
            self.requests.append(
                Request(
                    user=(event.get("user") or {}).get("username", ""),
                    verb=event.get("verb", ""),
                    resource=resource or event.get("requestURI", ""),
                    code=int((event.get("responseStatus") or {}).get("code", 0)),
                    at=_epoch(event["requestReceivedTimestamp"]),
                )
            )

    def between(self, users: Iterable[str], start: float, end: float) -> list[Request]:
        """The users' requests the server received in [start, end)."""
        self.refresh()
        wanted = set(users)
        return [r for r in self.requests if r.user in wanted and start <= r.at < end]


# What a node provider does for a NodeClaim, whoever runs it: create the node, write the
# claim's status, hold and release its termination finalizer, delete the node.
def is_provider_work(request: Request) -> bool:
    return (
        (request.resource == "nodes" and request.verb in ("create", "delete"))
        or request.resource == "nodeclaims/status"
        or (request.resource == "nodeclaims" and request.verb == "patch")
    )


@dataclass
class Tally:
    """Requests of one phase, split the way the benchmark reports them."""

    own: int = 0
    provider: int = 0
    conflicts: int = 0  # 409
    not_found: int = 0  # 404
    other_errors: int = 0  # any other code >= 400
    gets: int = 0
    by_kind: Counter[str] = field(default_factory=Counter)

    @property
    def failed(self) -> int:
        return self.conflicts + self.not_found + self.other_errors

    def top(self, count: int = 8) -> str:
        return ", ".join(f"{k} {v}" for k, v in self.by_kind.most_common(count))


def tally(requests: Iterable[Request], provider_users: Iterable[str] | None = None) -> Tally:
    """Count requests.  The provider's share is the requests of `provider_users` when the
    provider runs as its own client, else (a controller that is its own node backend, as our
    operator with KWOK is) the provider work within its requests."""
    providers = None if provider_users is None else set(provider_users)
    out = Tally()
    for r in requests:
        if r.user in providers if providers is not None else is_provider_work(r):
            out.provider += 1
        else:
            out.own += 1
        if r.code == 409:
            out.conflicts += 1
        elif r.code == 404:
            out.not_found += 1
        elif r.code >= 400:
            out.other_errors += 1
        if r.verb == "get":
            out.gets += 1
        out.by_kind[f"{r.verb} {r.resource}" + (f" {r.code}" if r.code >= 400 else "")] += 1
    return out
