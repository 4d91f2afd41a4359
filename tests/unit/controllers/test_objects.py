"""Shapes of the objects the workspace controller owns."""

from __future__ import annotations

from kaito.controllers import objects as o

OWNER = o.Owner(name="workspace-phi-3-mini", namespace="default", uid="u-1")


def work(**overrides: object) -> o.InferenceWorkload:
    base: dict[str, object] = {
        "owner": OWNER,
        "replicas": 1,
        "image": "kaito/serving:1",
        "command": ["python3", "-m", "serving"],
        "args": ["--model", "x"],
        "env": {"B": "2", "A": "1"},
        "gpus_per_node": 1,
        "revision": "1",
        "node_selector_labels": {"apps": "phi-3", "kaito.sh/workspace": "spoofed"},
    }
    base.update(overrides)
    return o.InferenceWorkload(**base)  # type: ignore[arg-type]


def test_nodeclaim_names_are_deterministic_short_and_distinct() -> None:
    names = {o.nodeclaim_name(OWNER, i) for i in range(50)}
    assert len(names) == 50
    assert o.nodeclaim_name(OWNER, 0) == o.nodeclaim_name(OWNER, 0)
    other = o.Owner(name=OWNER.name, namespace="other", uid="u-2")
    assert o.nodeclaim_name(other, 0) != o.nodeclaim_name(OWNER, 0)
    assert all(len(n) == 11 and n.startswith("ws") for n in names)


def test_nodeclaim_carries_ownership_instance_type_and_taint() -> None:
    claim = o.nodeclaim(OWNER, 0, instance_type="Standard_NC6s_v3", match_labels={"apps": "phi-3"})
    labels = claim["metadata"]["labels"]
    assert labels["kaito.sh/workspace"] == OWNER.name
    assert labels["kaito.sh/workspacenamespace"] == "default"
    assert labels["apps"] == "phi-3"
    reqs = {r["key"]: r["values"] for r in claim["spec"]["requirements"]}
    assert reqs["node.kubernetes.io/instance-type"] == ["Standard_NC6s_v3"]
    assert claim["spec"]["taints"] == [{"key": "sku", "value": "gpu", "effect": "NoSchedule"}]
    legacy = o.nodeclaim(OWNER, 0, instance_type="x", api_version="karpenter.sh/v1alpha5")
    assert legacy["kind"] == "Machine"
    assert "nodeClassRef" not in legacy["spec"]


def test_services_route_to_the_leader_pod_on_port_80() -> None:
    main, headless = o.services(OWNER)
    assert main["spec"]["selector"]["statefulset.kubernetes.io/pod-name"] == f"{OWNER.name}-0"
    ports = {p["port"]: p["targetPort"] for p in main["spec"]["ports"]}
    assert ports == {80: 5000, 29500: 29500}
    assert headless["spec"]["clusterIP"] == "None"
    assert main["metadata"]["ownerReferences"][0]["uid"] == "u-1"


def test_statefulset_requests_gpus_and_selects_owned_nodes() -> None:
    sts = o.statefulset(work())
    pod = sts["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["resources"]["limits"] == {"nvidia.com/gpu": "1"}
    assert [e["name"] for e in container["env"]] == ["A", "B"]
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    exprs = {e["key"]: e["values"] for e in terms["nodeSelectorTerms"][0]["matchExpressions"]}
    # the user's reserved key is dropped; the real ownership label is used
    assert exprs == {
        "apps": ["phi-3"],
        "kaito.sh/workspace": [OWNER.name],
        "kaito.sh/workspacenamespace": ["default"],
    }
    assert container["startupProbe"]["httpGet"] == {"path": "/health", "port": 5000}
    assert sts["spec"]["template"]["metadata"]["annotations"]["workspace.kaito.io/revision"] == "1"


def test_byo_statefulset_selects_only_the_user_labels() -> None:
    pod = o.statefulset(work(provisioned=False))["spec"]["template"]["spec"]
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    keys = [e["key"] for e in terms["nodeSelectorTerms"][0]["matchExpressions"]]
    assert keys == ["apps"]


def test_each_image_adapter_gets_an_init_container_and_pull_secret_mount() -> None:
    adapters = (
        o.ImageAdapter("falcon-7b-adapter", "reg.example/adapter:1", ("regcred",)),
        o.ImageAdapter("second", "reg.example/second:1"),
    )
    pod = o.statefulset(work(adapters=adapters))["spec"]["template"]["spec"]
    inits = pod["initContainers"]
    assert [c["name"] for c in inits] == ["adapter-falcon-7b-adapter", "adapter-second"]
    assert inits[0]["args"][:4] == [
        "--image",
        "reg.example/adapter:1",
        "--dest",
        "/mnt/adapter/falcon-7b-adapter",
    ]
    assert "--docker-config" in inits[0]["args"]
    assert "--docker-config" not in inits[1]["args"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "adapter-volume" in volumes
    projected = volumes["docker-config-falcon-7b-adapter"]["projected"]["sources"]
    assert projected[0]["secret"]["name"] == "regcred"
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    main_mounts = {m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    assert "/mnt/adapter" in main_mounts


def test_config_map_and_model_access_secret_are_wired() -> None:
    pod = o.statefulset(work(config_map="my-config", model_access_secret="hf"))["spec"]["template"][
        "spec"
    ]
    container = pod["containers"][0]
    assert {"name": "config-volume", "mountPath": "/mnt/config"} in container["volumeMounts"]
    token = next(e for e in container["env"] if e["name"] == "HF_TOKEN")
    assert token["valueFrom"]["secretKeyRef"]["name"] == "hf"


def test_startup_probe_budget_grows_with_model_size() -> None:
    assert o.startup_failure_threshold(0) == 180  # clamped to 30 min
    assert o.startup_failure_threshold(200 * 2**30) == 450  # 15 min + 60 min
    assert o.startup_failure_threshold(10**13) == 1080  # clamped to 180 min


def test_a_weights_image_is_fetched_before_vllm_starts() -> None:
    pod = o.statefulset(
        work(weights_image="reg.example/kaito-tiny:1", weights_pull_secrets=("regcred",))
    )["spec"]["template"]["spec"]
    first = pod["initContainers"][0]
    assert first["name"] == "model-weights-downloader"
    assert first["args"][:4] == [
        "--image",
        "reg.example/kaito-tiny:1",
        "--dest",
        "/workspace/weights",
    ]
    assert "--docker-config" in first["args"]
    assert {"name": "model-weights-volume", "mountPath": "/workspace/weights"} in first[
        "volumeMounts"
    ]
    volumes = {v["name"] for v in pod["volumes"]}
    assert "docker-config-model-weights" in volumes


def test_no_weights_image_means_no_fetcher() -> None:
    pod = o.statefulset(work())["spec"]["template"]["spec"]
    assert "initContainers" not in pod


def test_an_inferenceset_replica_is_labelled_for_its_set_and_drains_before_stopping() -> None:
    sts = o.statefulset(work(inference_set="phi"))
    template = sts["spec"]["template"]
    assert template["metadata"]["labels"]["inferenceset.kaito.sh/created-by"] == "phi"
    # the selector is unchanged, so existing StatefulSets are not broken by the label
    assert "inferenceset.kaito.sh/created-by" not in sts["spec"]["selector"]["matchLabels"]
    container = template["spec"]["containers"][0]
    assert container["lifecycle"] == {"preStop": {"sleep": {"seconds": 5}}}
    plain = o.statefulset(work())
    assert "inferenceset.kaito.sh/created-by" not in plain["spec"]["template"]["metadata"]["labels"]
    assert "lifecycle" not in plain["spec"]["template"]["spec"]["containers"][0]


def test_pullers_speak_plain_http_only_to_the_registries_named_so() -> None:
    named = frozenset({"10.250.0.1:5000"})
    pod = o.statefulset(
        work(
            weights_image="10.250.0.1:5000/kaito-tiny:1",
            adapters=(
                o.ImageAdapter("near", "10.250.0.1:5000/adapter:1"),
                o.ImageAdapter("far", "reg.example/adapter:1"),
            ),
            plain_http_registries=named,
        )
    )["spec"]["template"]["spec"]
    flags = {c["name"]: "--plain-http" in c["args"] for c in pod["initContainers"]}
    assert flags == {"model-weights-downloader": True, "adapter-near": True, "adapter-far": False}
    # by default every registry is spoken to over HTTPS
    default = o.statefulset(work(weights_image="10.250.0.1:5000/kaito-tiny:1"))
    init = default["spec"]["template"]["spec"]["initContainers"][0]
    assert "--plain-http" not in init["args"]
