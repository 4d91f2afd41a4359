"""Run a pod spec's containers as local processes: the link between a generated spec and a server.

KWOK nodes run no containers, so nothing on the local cluster proves that the StatefulSet the
workspace controller generates actually serves. This takes that spec (from the cluster through
kubectl, or from a YAML/JSON file), runs its init containers in order and then its main
container, with the serving venv's ``python3`` first on PATH:

* every volume becomes a directory under the work dir (or a host path given with ``--map``);
  Secrets and ConfigMaps (from the cluster or from the same file) are written as files,
  projected pull secrets included;
* each mount path is rewritten to its directory in command, args and env values;
* container port 5000 becomes a free 127.0.0.1 port; the URL is printed once /health answers.

For the serving image's own defaults (``/mnt/adapter`` and ``/mnt/config``) the launcher's flags
are made explicit, since a default cannot be rewritten. Stop with SIGTERM/SIGINT: the container
process group gets SIGTERM, then SIGKILL after a grace period.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
SERVING_PORT = 5000
Doc = dict[str, Any]


class RunPodError(RuntimeError):
    pass


def log(msg: str) -> None:
    print(f"run-pod: {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Source:
    """Where the workload and the Secrets/ConfigMaps it references come from."""

    def __init__(self, docs: list[Doc], kubectl: list[str] | None, namespace: str) -> None:
        self.docs = docs
        self.kubectl = kubectl
        self.namespace = namespace

    def get(self, kind: str, name: str) -> Doc | None:
        for d in self.docs:
            if d.get("kind") == kind and d.get("metadata", {}).get("name") == name:
                return d
        if self.kubectl is None:
            return None
        r = subprocess.run(
            [*self.kubectl, "-n", self.namespace, "get", kind.lower(), name, "-o", "json"],
            capture_output=True,
            text=True,
            check=False,
        )
        return json.loads(r.stdout) if r.returncode == 0 else None


def load_docs(path: Path) -> list[Doc]:
    text = path.read_text()
    docs: list[Doc] = []
    for d in yaml.safe_load_all(text):
        if isinstance(d, dict) and d.get("kind") == "List":
            docs += d.get("items", [])
        elif isinstance(d, dict):
            docs.append(d)
    return docs


def pod_spec(workload: Doc) -> Doc:
    kind = workload.get("kind")
    if kind == "Pod":
        return dict(workload["spec"])
    if kind in ("StatefulSet", "Deployment", "Job", "ReplicaSet", "DaemonSet"):
        return dict(workload["spec"]["template"]["spec"])
    raise RunPodError(f"kind {kind!r} has no pod template; give a StatefulSet, Deployment or Pod")


def _secret_data(doc: Doc) -> dict[str, bytes]:
    out = {k: base64.b64decode(v) for k, v in (doc.get("data") or {}).items()}
    out |= {k: str(v).encode() for k, v in (doc.get("stringData") or {}).items()}
    return out


def _configmap_data(doc: Doc) -> dict[str, bytes]:
    out = {k: str(v).encode() for k, v in (doc.get("data") or {}).items()}
    out |= {k: base64.b64decode(v) for k, v in (doc.get("binaryData") or {}).items()}
    return out


def _write_items(dest: Path, data: dict[str, bytes], items: list[Doc] | None) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    pairs = (
        [(i["key"], i.get("path", i["key"])) for i in items] if items else [(k, k) for k in data]
    )
    for key, rel in pairs:
        if key not in data:
            raise RunPodError(f"key {key!r} not found for volume file {rel!r}")
        target = dest / str(rel)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data[key])


def materialize_volume(vol: Doc, dest: Path, src: Source) -> None:
    """Fill ``dest`` with what the volume would show in the pod."""
    dest.mkdir(parents=True, exist_ok=True)
    if "secret" in vol:
        name = vol["secret"]["secretName"]
        doc = src.get("Secret", name)
        if doc is None:
            if vol["secret"].get("optional"):
                return
            raise RunPodError(f"volume {vol['name']!r}: Secret {name!r} not found")
        _write_items(dest, _secret_data(doc), vol["secret"].get("items"))
    elif "configMap" in vol:
        name = vol["configMap"]["name"]
        doc = src.get("ConfigMap", name)
        if doc is None:
            if vol["configMap"].get("optional"):
                return
            raise RunPodError(f"volume {vol['name']!r}: ConfigMap {name!r} not found")
        _write_items(dest, _configmap_data(doc), vol["configMap"].get("items"))
    elif "projected" in vol:
        for s in vol["projected"].get("sources", []):
            if "secret" in s:
                doc = src.get("Secret", s["secret"]["name"])
                if doc is None:
                    if s["secret"].get("optional"):
                        continue
                    raise RunPodError(
                        f"volume {vol['name']!r}: Secret {s['secret']['name']!r} not found"
                    )
                _write_items(dest, _secret_data(doc), s["secret"].get("items"))
            elif "configMap" in s:
                doc = src.get("ConfigMap", s["configMap"]["name"])
                if doc is not None:
                    _write_items(dest, _configmap_data(doc), s["configMap"].get("items"))
    # emptyDir, PVCs, hostPath (unless --map'ed) and the rest: an empty directory.


def rewrite(text: str, mapping: list[tuple[str, str]]) -> str:
    """Replace each mount path where it appears as a whole path component (longest first)."""
    for mount, host in mapping:
        pattern = r"(?<![\w./-])" + re.escape(mount.rstrip("/")) + r"(?=/|$|[^\w.-])"
        text = re.sub(pattern, host.replace("\\", "\\\\"), text)
    return text


def expand_vars(text: str, env: dict[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion in command and args (``$$`` escapes)."""
    return re.sub(
        r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
        lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)),
        text,
    )


def container_env(c: Doc, src: Source, pod_name: str, host: str = "127.0.0.1") -> dict[str, str]:
    env: dict[str, str] = {}
    for ef in c.get("envFrom", []):
        prefix = ef.get("prefix", "")
        if "configMapRef" in ef and (doc := src.get("ConfigMap", ef["configMapRef"]["name"])):
            env |= {prefix + k: v.decode() for k, v in _configmap_data(doc).items()}
        if "secretRef" in ef and (doc := src.get("Secret", ef["secretRef"]["name"])):
            env |= {prefix + k: v.decode() for k, v in _secret_data(doc).items()}
    for e in c.get("env", []):
        if "value" in e:
            env[e["name"]] = expand_vars(str(e["value"]), env)
            continue
        ref = e.get("valueFrom", {})
        value: str | None = None
        if "secretKeyRef" in ref:
            doc = src.get("Secret", ref["secretKeyRef"]["name"])
            data = _secret_data(doc) if doc else {}
            raw = data.get(ref["secretKeyRef"]["key"])
            value = raw.decode() if raw is not None else None
        elif "configMapKeyRef" in ref:
            doc = src.get("ConfigMap", ref["configMapKeyRef"]["name"])
            raw = _configmap_data(doc).get(ref["configMapKeyRef"]["key"]) if doc else None
            value = raw.decode() if raw is not None else None
        elif "fieldRef" in ref:
            path = ref["fieldRef"]["fieldPath"]
            value = {"metadata.name": pod_name, "status.podIP": host}.get(path, "")
        if value is not None:
            env[e["name"]] = value
    return env


def _has_flag(argv: list[str], flag: str) -> bool:
    return any(a == flag or a.startswith(flag + "=") for a in argv)


def _set_flag(argv: list[str], flag: str, value: str) -> list[str]:
    out = list(argv)
    for i, a in enumerate(out):
        if a == flag and i + 1 < len(out):
            out[i + 1] = value
            return out
        if a.startswith(flag + "="):
            out[i] = f"{flag}={value}"
            return out
    return [*out, flag, value]


class PodRunner:
    def __init__(
        self,
        spec: Doc,
        src: Source,
        *,
        work: Path,
        maps: dict[str, Path],
        python_bin: Path,
        pod_name: str,
        host: str = "127.0.0.1",
        port: int | None = None,
    ) -> None:
        self.spec = spec
        self.src = src
        self.work = work
        self.maps = maps
        self.python_bin = python_bin
        self.pod_name = pod_name
        self.volumes: dict[str, Path] = {}
        self.host = host
        self.port = port or free_port()

    def prepare_volumes(self) -> None:
        for vol in self.spec.get("volumes", []):
            d = self.work / "volumes" / vol["name"]
            materialize_volume(vol, d, self.src)
            self.volumes[vol["name"]] = d

    def mounts(self, c: Doc) -> list[tuple[str, str]]:
        out = []
        for m in c.get("volumeMounts", []):
            path = m["mountPath"].rstrip("/") or "/"
            if path in self.maps:
                host = self.maps[path]
            else:
                base = self.volumes.get(m["name"])
                if base is None:  # e.g. a volumeClaimTemplate: an empty directory
                    base = self.work / "volumes" / m["name"]
                    base.mkdir(parents=True, exist_ok=True)
                    self.volumes[m["name"]] = base
                host = base / m["subPath"] if m.get("subPath") else base
                host.mkdir(parents=True, exist_ok=True)
            out.append((path, str(host)))
        for path, host in self.maps.items():
            if path not in {p for p, _ in out}:
                out.append((path, str(host)))
        return sorted(out, key=lambda ph: len(ph[0]), reverse=True)

    def command(self, c: Doc, main: bool) -> tuple[list[str], dict[str, str]]:
        argv = [*c.get("command", []), *c.get("args", [])]
        if not argv:
            raise RunPodError(
                f"container {c['name']!r} has no command: the image entrypoint is unknown here"
            )
        spec_env = container_env(c, self.src, self.pod_name, self.host)
        mapping = self.mounts(c)
        argv = [rewrite(expand_vars(a, spec_env), mapping) for a in argv]
        spec_env = {k: rewrite(v, mapping) for k, v in spec_env.items()}
        if main and self._is_serving(argv):
            mounts = dict(mapping)
            if not _has_flag(argv, "--adapter-dir") and "/mnt/adapter" in mounts:
                argv += ["--adapter-dir", mounts["/mnt/adapter"]]
            cfg = Path(mounts.get("/mnt/config", "/nonexistent")) / "inference_config.yaml"
            if (
                not _has_flag(argv, "--config")
                and not _has_flag(argv, "--kaito-config-file")
                and cfg.is_file()
            ):
                argv += ["--config", str(cfg)]
            argv = _set_flag(argv, "--port", str(self.port))
            argv = _set_flag(argv, "--host", self.host)
        elif main:
            argv = [
                a.replace(str(SERVING_PORT), str(self.port)) if "port" in a else a for a in argv
            ]
        env = dict(os.environ)
        env["PATH"] = f"{self.python_bin.parent}{os.pathsep}{env.get('PATH', '')}"
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
        env |= spec_env
        if argv[0] in ("python", "python3"):
            argv[0] = str(self.python_bin)
        return argv, env

    @staticmethod
    def _is_serving(argv: list[str]) -> bool:
        return any(
            a == "-m" and argv[i + 1 : i + 2] == ["serving"] for i, a in enumerate(argv)
        ) or ("-m serving " in " ".join(argv) + " ")

    def run_init(self) -> None:
        for c in self.spec.get("initContainers", []):
            argv, env = self.command(c, main=False)
            log(f"init container {c['name']}: {' '.join(argv)}")
            r = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True, check=False)
            sys.stderr.write(r.stdout + r.stderr)
            if r.returncode != 0:
                raise RunPodError(
                    f"init container {c['name']!r} failed with exit code {r.returncode}"
                )

    def run_main(self, name: str | None, wait_s: float) -> int:
        containers = self.spec.get("containers", [])
        c = next((x for x in containers if x["name"] == name), None) if name else containers[0]
        if c is None:
            raise RunPodError(f"no container named {name!r}")
        argv, env = self.command(c, main=True)
        log(f"container {c['name']}: {' '.join(argv)}")
        # The container's output goes to stderr: stdout carries only the URL line.
        proc = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=sys.stderr, start_new_session=True)
        stopping = False

        def stop(*_: object) -> None:
            nonlocal stopping
            stopping = True
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        serves = any(
            p.get("containerPort") == SERVING_PORT for p in c.get("ports", [])
        ) or self._is_serving(argv)
        if serves:
            url = f"http://{self.host}:{self.port}"
            deadline = time.monotonic() + wait_s
            while proc.poll() is None and not stopping and time.monotonic() < deadline:
                try:
                    with urllib.request.urlopen(url + "/health", timeout=2) as r:
                        if r.status == 200:
                            print(f"URL={url}", flush=True)
                            break
                except (urllib.error.URLError, OSError):
                    pass
                time.sleep(0.5)
            else:
                if proc.poll() is None and not stopping:
                    log(f"not healthy after {wait_s}s; stopping")
                    stop()
        try:
            rc = proc.wait()
        except KeyboardInterrupt:
            stop()
            rc = proc.wait()
        finally:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        return 0 if stopping else rc


def default_python() -> Path:
    r = subprocess.run(
        [str(ROOT / "hack" / "serving-env"), "--print-only"],
        capture_output=True,
        text=True,
        check=False,
    )
    venv = (
        Path(r.stdout.strip().splitlines()[-1]) if r.returncode == 0 and r.stdout.strip() else None
    )
    if venv and (venv / "bin" / "python3").exists():
        return venv / "bin" / "python3"
    return Path(sys.executable)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="hack/run-pod", description=__doc__.splitlines()[0])
    p.add_argument(
        "target", help="a YAML/JSON file, or KIND/NAME (or NAME of a StatefulSet) with --kubeconfig"
    )
    p.add_argument(
        "--kubeconfig", help="read the workload (and its Secrets/ConfigMaps) from this cluster"
    )
    p.add_argument("-n", "--namespace", default="default")
    p.add_argument("--kubectl", default="kubectl", help="kubectl binary")
    p.add_argument("--name", help="in a file with several workloads, the one to run")
    p.add_argument("--container", help="main container name (default: the first)")
    p.add_argument(
        "--map",
        action="append",
        default=[],
        metavar="MOUNTPATH=HOSTPATH",
        help="use a host directory for a mount path",
    )
    p.add_argument(
        "--work-dir", type=Path, help="where volumes go (default: a temp dir, removed at exit)"
    )
    p.add_argument(
        "--python", type=Path, help="interpreter for python3 (default: the serving venv's)"
    )
    p.add_argument("--wait", type=float, default=600, help="seconds to wait for /health")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="loopback address to serve on (a pod IP such as 127.0.0.2; default 127.0.0.1)",
    )
    p.add_argument("--port", type=int, help="port to serve on (default: a free one)")
    a = p.parse_args(argv)
    maps = {}
    for m in a.map:
        mount, sep, host = m.partition("=")
        if not sep or not mount.startswith("/"):
            p.error(f"--map {m!r}: expected /mount/path=/host/path")
        maps[mount.rstrip("/")] = Path(host).resolve()
    kubectl = [a.kubectl, "--kubeconfig", a.kubeconfig] if a.kubeconfig else None
    try:
        if kubectl:
            ref = a.target if "/" in a.target else f"statefulset/{a.target}"
            r = subprocess.run(
                [*kubectl, "-n", a.namespace, "get", ref, "-o", "json"],
                capture_output=True,
                text=True,
                check=False,
            )
            if r.returncode != 0:
                raise RunPodError(f"kubectl get {ref}: {r.stderr.strip()}")
            docs = [json.loads(r.stdout)]
        else:
            docs = load_docs(Path(a.target))
        workloads = [
            d for d in docs if d.get("kind") in ("StatefulSet", "Deployment", "Pod", "Job")
        ]
        if a.name:
            workloads = [d for d in workloads if d["metadata"]["name"] == a.name]
        if not workloads:
            raise RunPodError(f"{a.target}: no StatefulSet, Deployment or Pod found")
        workload = workloads[0]
        ns = workload.get("metadata", {}).get("namespace", a.namespace)
        src = Source(docs, kubectl, ns)
        work = a.work_dir or Path(tempfile.mkdtemp(prefix="run-pod-"))
        name = workload["metadata"]["name"] + ("-0" if workload["kind"] == "StatefulSet" else "")
        runner = PodRunner(
            pod_spec(workload),
            src,
            work=work,
            maps=maps,
            python_bin=a.python or default_python(),
            pod_name=name,
            host=a.host,
            port=a.port,
        )
        try:
            runner.prepare_volumes()
            runner.run_init()
            rc = runner.run_main(a.container, a.wait)
        finally:
            if a.work_dir is None:
                shutil.rmtree(work, ignore_errors=True)
    except RunPodError as e:
        log(str(e))
        raise SystemExit(1) from None
    raise SystemExit(rc)


if __name__ == "__main__":
    main()
