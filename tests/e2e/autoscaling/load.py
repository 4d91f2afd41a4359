"""Load against an InferenceSet's Service, routed the way kube-proxy would route it.

There is no kube-proxy on the local control plane, so :class:`ServiceRouter` does its part:
it reads the Service's selector and target port, and sends each new request to one of the pods
the selector matches that are Ready and not terminating (what the endpoints controller puts in
the EndpointSlice as ready), round robin.  :class:`Load` keeps N requests in flight and
records every outcome; a request is *lost* when it gets no HTTP answer at all (connection
refused or reset, timeout) or a 5xx without a body saying why.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field

from ..kube_http import ApiError, KubeHttp

REFRESH_S = 0.25
BODY = {
    "model": "tiny-llama-test",
    "prompt": "the autoscaler",
    "max_tokens": 48,
    "ignore_eos": True,
    "temperature": 0,
}


class ServiceRouter:
    """Ready, non-terminating pods behind a Service, refreshed every REFRESH_S."""

    def __init__(self, api: KubeHttp, namespace: str, service: str) -> None:
        self.api = api
        self.namespace = namespace
        svc = api.get(f"/api/v1/namespaces/{namespace}/services/{service}")
        self.selector = ",".join(f"{k}={v}" for k, v in svc["spec"]["selector"].items())
        self.port = int(svc["spec"]["ports"][0]["targetPort"])
        self.endpoints: list[str] = []
        self._turn = itertools.count()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="router")
        self._thread.start()

    def _refresh(self) -> None:
        pods = self.api.get(
            f"/api/v1/namespaces/{self.namespace}/pods", labelSelector=self.selector
        )["items"]
        ready = []
        for pod in pods:
            conds = {c["type"]: c["status"] for c in pod["status"].get("conditions") or ()}
            ip = pod["status"].get("podIP")
            if ip and conds.get("Ready") == "True" and not pod["metadata"].get("deletionTimestamp"):
                ready.append(f"http://{ip}:{self.port}")
        self.endpoints = sorted(ready)

    def _loop(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(ApiError, OSError):
                self._refresh()
            self._stop.wait(REFRESH_S)

    def pick(self) -> str | None:
        endpoints = self.endpoints
        if not endpoints:
            return None
        return endpoints[next(self._turn) % len(endpoints)]

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


@dataclass
class Outcome:
    started: float
    seconds: float
    endpoint: str
    status: int | None  # None: no HTTP answer
    detail: str = ""

    @property
    def lost(self) -> bool:
        if self.status is None:
            return True
        return self.status >= 500 and not self.detail


@dataclass
class Load:
    """`concurrency` workers, each sending one request after another through the router."""

    router: ServiceRouter
    timeout_s: float = 120
    outcomes: list[Outcome] = field(default_factory=list)
    _workers: list[threading.Event] = field(default_factory=list)
    _threads: list[threading.Thread] = field(default_factory=list)

    def set_concurrency(self, n: int) -> None:
        while len(self._workers) > n:
            self._workers.pop().set()
        while len(self._workers) < n:
            stop = threading.Event()
            thread = threading.Thread(target=self._work, args=(stop,), daemon=True)
            self._workers.append(stop)
            self._threads.append(thread)
            thread.start()

    def _work(self, stop: threading.Event) -> None:
        while not stop.is_set():
            endpoint = self.router.pick()
            if endpoint is None:
                stop.wait(0.1)  # no endpoint: like a Service without ready pods, nothing sent
                continue
            self.outcomes.append(self.send(endpoint))

    def send(self, endpoint: str) -> Outcome:
        return complete(endpoint, endpoint, timeout_s=self.timeout_s)

    def stop(self) -> None:
        self.set_concurrency(0)
        for thread in self._threads:
            thread.join(self.timeout_s + 5)

    def summary(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for o in self.outcomes:
            key = "lost" if o.lost else str(o.status)
            counts[key] = counts.get(key, 0) + 1
        return counts


@dataclass
class ActivatorClient:
    """Requests to the activator with the Host a client of the set's Service would send."""

    port: int
    host: str
    timeout_s: float = 600

    def send(self) -> Outcome:
        return complete(
            f"http://127.0.0.1:{self.port}",
            f"activator:{self.port}",
            host=self.host,
            timeout_s=self.timeout_s,
        )


def complete(
    base: str, endpoint: str, *, host: str | None = None, timeout_s: float = 120
) -> Outcome:
    """One /v1/completions request and its outcome (never raises)."""
    started = time.monotonic()
    headers = {"content-type": "application/json"}
    if host:
        headers["host"] = host
    req = urllib.request.Request(
        base + "/v1/completions", json.dumps(BODY).encode(), headers, method="POST"
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            resp.read()
            return Outcome(started, time.monotonic() - started, endpoint, resp.status)
    except urllib.error.HTTPError as err:
        detail = err.read().decode(errors="replace")[:300]
        return Outcome(started, time.monotonic() - started, endpoint, err.code, detail)
    except (OSError, TimeoutError) as err:
        return Outcome(started, time.monotonic() - started, endpoint, None, repr(err))
