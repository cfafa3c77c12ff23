"""infra/ checked offline: every manifest parses and uses only fields its kind defines, the
generated manifests are up to date with what they embed, and every image, entry point, config
and file they name exists in this repository. No cluster, no network, no Ray runtime.
"""

from __future__ import annotations

import configparser
import copy
import importlib.util
import re
import shlex
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from k8s_schema import validate_manifest

ROOT = Path(__file__).resolve().parents[1]
INFRA = ROOT / "infra"
K8S = INFRA / "k8s"
DOCKER = INFRA / "docker"
VM_CLUSTER = INFRA / "cluster" / "ray-cluster-vm.yaml"
GPU_SERVE = ROOT / "serve_configs" / "gpu.yaml"
SHARED_MOUNT = "/mnt/shared"
MLFLOW_URI = "http://mlflow:5000"  # the Service in infra/k8s/mlflow.yaml
REGISTRY = "registry.example.com/biogner/"
RAY_KINDS = {"RayCluster", "RayJob", "RayService"}
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def _pin(package: str) -> str:
    """The exact version pyproject.toml pins `package` to."""
    for dep in PYPROJECT["project"]["dependencies"]:
        m = re.fullmatch(rf"{re.escape(package)}(\[[^\]]*\])?==([\w.]+)", dep)
        if m:
            return m.group(2)
    raise AssertionError(f"pyproject.toml pins no {package}")


RAY_VERSION = _pin("ray")
MLFLOW_VERSION = _pin("mlflow")
VERSION = PYPROJECT["project"]["version"]


# --------------------------------------------------------------------------- schema
# Manifests are validated strictly against KubeRay's own CRD schemas and Kubernetes' own API
# types (tests/k8s_schema.py); this file checks what the schemas cannot: names, pins, security.


# --------------------------------------------------------------------------- loading


def load_docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]


MANIFESTS = sorted(K8S.glob("*.yaml"))
ALL_DOCS = [(p, d) for p in MANIFESTS for d in load_docs(p)]


def docs_of(kind: str) -> list[tuple[Path, dict[str, Any]]]:
    return [(p, d) for p, d in ALL_DOCS if d["kind"] == kind]


def cluster_specs() -> list[tuple[str, dict[str, Any]]]:
    """Every Ray cluster spec in the manifests: the RayCluster's and the embedded copies."""
    out = []
    for path, doc in ALL_DOCS:
        spec = {
            "RayCluster": lambda d: d["spec"],
            "RayJob": lambda d: d["spec"]["rayClusterSpec"],
            "RayService": lambda d: d["spec"]["rayClusterConfig"],
        }.get(doc["kind"])
        if spec is not None:
            out.append((f"{path.name}:{doc['kind']}", spec(doc)))
    return out


def ray_pod_templates() -> Iterator[tuple[str, dict[str, Any]]]:
    for name, spec in cluster_specs():
        yield f"{name}:head", spec["headGroupSpec"]["template"]
        for group in spec.get("workerGroupSpecs", []):
            yield f"{name}:{group['groupName']}", group["template"]


def submitter_pod_templates() -> Iterator[tuple[str, dict[str, Any]]]:
    for path, doc in docs_of("RayJob"):
        if "submitterPodTemplate" in doc["spec"]:
            yield f"{path.name}:submitter", doc["spec"]["submitterPodTemplate"]


def all_pod_templates() -> Iterator[tuple[str, dict[str, Any]]]:
    yield from ray_pod_templates()
    yield from submitter_pod_templates()
    for path, doc in ALL_DOCS:
        if doc["kind"] in ("Deployment", "StatefulSet", "Job"):
            yield f"{path.name}:{doc['kind']}", doc["spec"]["template"]


def load_render() -> ModuleType:
    """infra/render.py as a module (infra/ is not a package)."""
    spec = importlib.util.spec_from_file_location("biogner_infra_render", INFRA / "render.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


README = INFRA / "README.md"
TEMPLATE_FILES = sorted((INFRA / "templates").glob("*.yaml.in"))


def readme_secrets(text: str | None = None) -> dict[str, set[str]]:
    """{Secret name: keys} created by the `kubectl create secret generic` steps of the shell
    blocks of infra/README.md (continuation lines joined, commented-out lines skipped)."""
    if text is None:
        text = README.read_text(encoding="utf-8")
    created: dict[str, set[str]] = {}
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            if not line.lstrip().startswith("kubectl create secret generic "):
                continue
            argv = shlex.split(line, comments=True)
            keys = created.setdefault(argv[4], set())
            for arg in argv[5:]:
                m = re.fullmatch(r"--from-(?:literal|file)=([\w.-]+)=.*", arg)
                if m:
                    keys.add(m.group(1))
    return created


def serve_service_names() -> set[str]:
    return {f"{d['metadata']['name']}-serve-svc" for _, d in docs_of("RayService")}


def head_service_names(docs: list[dict[str, Any]]) -> list[str]:
    """The head Service KubeRay creates for each RayCluster and RayService with a fixed name
    (ray-operator/controllers/ray/utils/util.go GenerateHeadServiceName: `<name>-head-svc`, or a
    RayCluster's headService.metadata.name). RayJobs use generateName: theirs are unique."""
    names = []
    for doc in docs:
        if doc["kind"] not in ("RayCluster", "RayService"):
            continue
        override = None
        if doc["kind"] == "RayCluster":
            head_service = doc["spec"]["headGroupSpec"].get("headService") or {}
            override = head_service.get("metadata", {}).get("name")
        names.append(override or f"{doc['metadata']['name']}-head-svc")
    return names


# --------------------------------------------------------------------------- manifests


def test_every_manifest_parses_and_each_ray_kind_is_present() -> None:
    assert {p.name for p in MANIFESTS} >= {
        "raycluster.yaml",
        "rayjob-train.yaml",
        "rayjob-sweep.yaml",
        "rayservice.yaml",
        "storage.yaml",
        "mlflow.yaml",
        "network-policy.yaml",
    }
    kinds = [d["kind"] for _, d in ALL_DOCS]
    assert set(kinds) >= RAY_KINDS
    assert {"PersistentVolumeClaim", "Deployment", "StatefulSet", "Service"} <= set(kinds)
    assert "NetworkPolicy" in kinds


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_uses_only_fields_of_its_kind(path: Path) -> None:
    errors = [f"{path.name}: {e}" for doc in load_docs(path) for e in validate_manifest(doc)]
    assert not errors, "\n".join(errors)


def _raycluster() -> dict[str, Any]:
    return copy.deepcopy(load_docs(K8S / "raycluster.yaml")[0])


@pytest.mark.parametrize(
    ("tamper", "expected"),
    [
        # a typo of a KubeRay field
        (
            lambda d: d["spec"]["headGroupSpec"].update(rayStartParam={}),
            "spec.headGroupSpec.rayStartParam: unknown field",
        ),
        # rayStartParams is map[string]string
        (
            lambda d: d["spec"]["headGroupSpec"]["rayStartParams"].update({"num-cpus": 0}),
            "spec.headGroupSpec.rayStartParams.num-cpus: expected str",
        ),
        # the worker group's name is required
        (
            lambda d: d["spec"]["workerGroupSpecs"][0].pop("groupName"),
            "spec.workerGroupSpecs[0]: missing required field 'groupName'",
        ),
        # container env values are strings
        (
            lambda d: d["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["env"].append(
                {"name": "N", "value": 1}
            ),
            "containers[0].env[",
        ),
        # an enum outside its values
        (
            lambda d: d["spec"]["autoscalerOptions"].update(upscalingMode="Fast"),
            "spec.autoscalerOptions.upscalingMode: expected",
        ),
    ],
    ids=["typo", "int-start-param", "no-group-name", "int-env", "bad-enum"],
)
def test_schema_catches_a_tampered_manifest(tamper: Any, expected: str) -> None:
    doc = _raycluster()
    assert validate_manifest(doc) == []
    tamper(doc)
    errors = validate_manifest(doc)
    assert any(expected in e for e in errors), errors


def test_tampered_rayjob_and_rayservice_are_caught() -> None:
    job = copy.deepcopy(docs_of("RayJob")[0][1])
    job["spec"]["shutdownAfterJobFinishes"] = "yes"
    job["spec"]["entryPoint"] = job["spec"].pop("entrypoint")
    errors = validate_manifest(job)
    assert any("spec.shutdownAfterJobFinishes: expected boolean" in e for e in errors)
    assert any("spec.entryPoint: unknown field" in e for e in errors)
    service = copy.deepcopy(docs_of("RayService")[0][1])
    service["spec"]["rayClusterSpec"] = service["spec"].pop("rayClusterConfig")
    errors = validate_manifest(service)
    assert "spec: missing required field 'rayClusterConfig'" in errors


def test_generated_manifests_are_up_to_date_with_render() -> None:
    render = load_render()
    assert render.drift(ROOT) == []
    for rel, text in render.render_all(ROOT).items():
        assert (ROOT / rel).read_text(encoding="utf-8") == text


def test_render_detects_drift_in_an_embedded_file(tmp_path: Path) -> None:
    render = load_render()
    for rel in ("infra/k8s", "infra/templates", "serve_configs"):
        shutil.copytree(ROOT / rel, tmp_path / rel)
    assert render.drift(tmp_path) == []
    gpu = tmp_path / "serve_configs" / "gpu.yaml"
    gpu.write_text(gpu.read_text().replace("max_replicas: 4", "max_replicas: 5"))
    assert render.drift(tmp_path) == [Path("infra/k8s/rayservice.yaml")]
    assert render.main(["--check", "--root", str(tmp_path)]) == 1
    assert render.main(["--root", str(tmp_path)]) == 0  # re-render fixes it
    assert render.drift(tmp_path) == []
    service = load_docs(tmp_path / "infra" / "k8s" / "rayservice.yaml")[0]
    assert "max_replicas: 5" in service["spec"]["serveConfigV2"]


def test_every_ray_cluster_spec_is_the_raycluster_spec() -> None:
    specs = cluster_specs()
    assert len(specs) == 4  # the RayCluster, two RayJobs, the RayService
    reference = _raycluster()["spec"]
    for name, spec in specs:
        assert spec == reference, name


def test_rayservice_embeds_exactly_the_gpu_serve_config() -> None:
    ((_, service),) = docs_of("RayService")
    embedded = service["spec"]["serveConfigV2"]
    assert yaml.safe_load(embedded) == yaml.safe_load(GPU_SERVE.read_text(encoding="utf-8"))
    assert embedded == GPU_SERVE.read_text(encoding="utf-8")  # comments included


def test_rayservice_serve_config_is_a_valid_biogner_serve_config() -> None:
    from biogner.serve.schema import ServeConfig

    ((_, service),) = docs_of("RayService")
    serve = yaml.safe_load(service["spec"]["serveConfigV2"])
    (app,) = serve["applications"]
    module, _, attr = app["import_path"].partition(":")
    builder = getattr(importlib.import_module(module), attr, None)
    assert callable(builder), f"{module} has no {attr}()"  # (it may re-export it)
    cfg = ServeConfig.model_validate(app["args"])
    assert cfg.tracking.tracking_uri == MLFLOW_URI
    assert cfg.generation.device == "cuda"
    # A replica per GPU: the model deployment asks for one, the GPU group has them.
    assert cfg.model.ray_actor_options.get("num_gpus") == 1


def test_rayservice_proxies_listen_on_the_pod_network() -> None:
    ((_, service),) = docs_of("RayService")
    serve = yaml.safe_load(service["spec"]["serveConfigV2"])
    assert serve.get("http_options", {}).get("host", "0.0.0.0") == "0.0.0.0"
    ports = {
        p["name"]: p["containerPort"]
        for p in service["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"][
            "containers"
        ][0]["ports"]
    }
    assert ports["serve"] == serve.get("http_options", {}).get("port", 8000)


def test_ray_clusters_match_the_pinned_ray_and_have_cpu_head_and_gpu_workers() -> None:
    for name, spec in cluster_specs():
        assert spec["rayVersion"] == RAY_VERSION, name
        head = spec["headGroupSpec"]
        assert head["rayStartParams"].get("num-cpus") == "0", name  # no work on the head
        (head_container,) = head["template"]["spec"]["containers"]
        assert "nvidia.com/gpu" not in head_container["resources"].get("limits", {}), name
        # KubeRay finds these ports by name (job submission, the Serve Service).
        ports = {p["name"]: p["containerPort"] for p in head_container["ports"]}
        assert ports["dashboard"] == 8265 and ports["serve"] == 8000, name
        gpu_groups = [
            g
            for g in spec["workerGroupSpecs"]
            if g["template"]["spec"]["containers"][0]["resources"]["limits"].get("nvidia.com/gpu")
        ]
        assert gpu_groups, f"{name}: no GPU worker group"
        for group in spec["workerGroupSpecs"]:
            assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], name


def test_every_ray_pod_mounts_the_shared_checkpoint_volume() -> None:
    (claim,) = [d["metadata"]["name"] for _, d in docs_of("PersistentVolumeClaim")]
    (_, pvc) = docs_of("PersistentVolumeClaim")[0]
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]  # every node writes checkpoints
    for name, template in ray_pod_templates():
        volumes = {v["name"]: v for v in template["spec"]["volumes"]}
        for container in template["spec"]["containers"]:
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            assert SHARED_MOUNT in mounts, name
            volume = volumes[mounts[SHARED_MOUNT]]
            assert volume["persistentVolumeClaim"]["claimName"] == claim, name
            env = {e["name"]: e.get("value") for e in container["env"]}
            assert env["MLFLOW_TRACKING_URI"] == MLFLOW_URI, name
            for var in ("BIOGNER_DATA_DIR", "BIOGNER_HOME", "BIOGNER_CACHE"):
                assert env[var].startswith(SHARED_MOUNT + "/"), (name, var)


def test_names_referenced_across_manifests_exist() -> None:
    """Volumes, Secrets (unless optional) and Services point at objects that are defined; the
    Secrets are defined by infra/README.md's `kubectl create secret` steps, not by manifests."""
    claims = {d["metadata"]["name"] for _, d in docs_of("PersistentVolumeClaim")}
    secrets = readme_secrets()
    assert not docs_of("Secret")
    claim_templates = {
        c["metadata"]["name"]
        for _, d in docs_of("StatefulSet")
        for c in d["spec"].get("volumeClaimTemplates", [])
    }
    for name, template in all_pod_templates():
        pod = template["spec"]
        mounted = {v["name"] for v in pod.get("volumes", [])}
        if name.endswith(":StatefulSet"):
            mounted |= claim_templates
        for volume in pod.get("volumes", []):
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims, name
        for container in pod["containers"]:
            for mount in container.get("volumeMounts", []):
                assert mount["name"] in mounted, (name, mount)
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref and not ref.get("optional"):
                    assert ref["key"] in secrets.get(ref["name"], set()), (name, ref)
            for source in container.get("envFrom", []):
                ref = source.get("secretRef")
                if ref and not ref.get("optional"):
                    assert ref["name"] in secrets, (name, ref)
    labels = [t.get("metadata", {}).get("labels", {}) for _, t in all_pod_templates()]
    for _, service in docs_of("Service"):
        selector = service["spec"]["selector"]
        assert any(selector.items() <= lab.items() for lab in labels), service["metadata"]
    for _, doc in docs_of("Deployment") + docs_of("StatefulSet"):
        match = doc["spec"]["selector"]["matchLabels"]
        assert match.items() <= doc["spec"]["template"]["metadata"]["labels"].items()


def _mlflow_server() -> dict[str, Any]:
    (deployment,) = [d for _, d in docs_of("Deployment") if d["metadata"]["name"] == "mlflow"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return dict(container)


def test_mlflow_server_uses_postgres_and_an_object_store() -> None:
    container = _mlflow_server()
    args = dict(a.removeprefix("--").partition("=")[::2] for a in container["args"])
    env = {e["name"]: e for e in container["env"]}
    # `mlflow server` reads these two options from its environment (click envvars)
    backend = env["MLFLOW_BACKEND_STORE_URI"]["value"]
    assert backend.startswith("postgresql://") and "@mlflow-postgres:5432/" in backend
    assert "backend-store-uri" not in args and "artifacts-destination" not in args
    assert "serve-artifacts" in args  # workers upload through the server, no bucket keys
    # Kubernetes expands $(VAR) in an env value only from variables defined before it: each
    # one is defined, from a required Secret key that the README creates.
    created = readme_secrets()
    refs = {n: e.get("valueFrom", {}).get("secretKeyRef") for n, e in env.items()}
    names = list(env)
    for var in re.findall(r"\$\((\w+)\)", backend):
        ref = refs[var]
        assert ref is not None and not ref.get("optional"), var
        assert ref["key"] in created[ref["name"]], (var, ref)
        assert names.index(var) < names.index("MLFLOW_BACKEND_STORE_URI"), var
    destination = refs["MLFLOW_ARTIFACTS_DESTINATION"]
    assert destination is not None
    assert re.search(
        rf"--from-literal={destination['key']}=\"?s3://", README.read_text(encoding="utf-8")
    ), "the README's mlflow-s3 Secret sets an s3:// artifacts destination"
    assert args["host"] == "0.0.0.0" and args["port"] == "5000"
    service = next(d for _, d in docs_of("Service") if d["metadata"]["name"] == "mlflow")
    assert service["spec"]["ports"][0]["port"] == 5000
    assert f"http://{service['metadata']['name']}:5000" == MLFLOW_URI
    # MLflow 3 rejects unknown Host headers: the Service name must be allowed.
    assert "mlflow:*" in env["MLFLOW_SERVER_ALLOWED_HOSTS"]["value"].split(",")
    ((_, db),) = docs_of("StatefulSet")
    assert db["spec"]["template"]["spec"]["containers"][0]["image"].startswith("postgres:")


# --------------------------------------------------------------------------- security, operations


def test_serve_auth_is_required_in_the_cluster_and_fed_from_a_required_secret() -> None:
    from biogner.serve.schema import ServeConfig

    ((_, service),) = docs_of("RayService")
    (app,) = yaml.safe_load(service["spec"]["serveConfigV2"])["applications"]
    cfg = ServeConfig.model_validate(app["args"])
    assert cfg.require_auth  # the cluster endpoint refuses to start without a key
    local = yaml.safe_load((ROOT / "serve_configs" / "local.yaml").read_text(encoding="utf-8"))
    assert ServeConfig.model_validate(local["applications"][0]["args"]).require_auth is False
    assert ServeConfig().require_auth is False  # `biogner serve` with no config file
    created = readme_secrets()
    groups = set()
    for name, template in ray_pod_templates():
        groups.add(name.rsplit(":", 1)[1])
        for container in template["spec"]["containers"]:
            (entry,) = [e for e in container["env"] if e["name"] == cfg.api_key_env]
            assert "value" not in entry, name  # never a literal key
            ref = entry["valueFrom"]["secretKeyRef"]
            assert ref.get("optional", False) is False, name
            assert ref["key"] in created.get(ref["name"], set()), (name, ref)
    assert groups == {"head", "gpu", "cpu"}  # the ingress may land on any of them


def test_no_manifest_holds_a_secret_or_a_placeholder() -> None:
    for path, doc in ALL_DOCS:
        if doc["kind"] == "Secret":
            assert not doc.get("data") and not doc.get("stringData"), path.name
    for path in [*MANIFESTS, *TEMPLATE_FILES, README]:
        assert "change-me" not in path.read_text(encoding="utf-8").lower(), path.name
    created = readme_secrets()
    assert created["mlflow-postgres"] == {"POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"}
    assert created["mlflow-s3"] >= {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    assert created["biogner-serve"] == {"api-key"}
    # The MLflow pods need their Secrets: every reference is required and created above.
    refs: list[tuple[str, str | None, bool]] = []
    for _, doc in docs_of("Deployment") + docs_of("StatefulSet"):
        spec = doc["spec"]["template"]["spec"]
        for container in [*spec.get("initContainers", []), *spec["containers"]]:
            for source in container.get("envFrom", []):
                ref = source["secretRef"]
                refs.append((ref["name"], None, ref.get("optional", False)))
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    refs.append((ref["name"], ref["key"], ref.get("optional", False)))
    assert {name for name, _, _ in refs} == {"mlflow-postgres", "mlflow-s3", "mlflow-auth"}
    for name, key, optional in refs:
        assert optional is False, (name, key)
        assert name in created and (key is None or key in created[name]), (name, key)


def test_readme_secret_parser_reads_continued_commands_and_skips_comments() -> None:
    text = (
        "```bash\n"
        "kubectl create secret generic a \\\n"
        '  --from-literal=K1="$(openssl rand -hex 8)" \\\n'
        "  --from-file=K2=./key.txt\n"
        "# kubectl create secret generic b --from-literal=K=v\n"
        "kubectl apply -f x.yaml  # not a secret\n"
        "```\n"
    )
    assert readme_secrets(text) == {"a": {"K1", "K2"}}


KUBECTL_ON_RAYJOB = re.compile(r"kubectl\s+(\w+)\b[^\n]*?rayjob-\w+\.yaml")


def test_rayjobs_are_created_afresh_never_reapplied() -> None:
    jobs = docs_of("RayJob")
    assert len(jobs) == 2
    for path, doc in jobs:
        meta = doc["metadata"]
        # A fixed name: KubeRay keeps the finished RayJob, so `apply` is a no-op ("unchanged").
        assert "name" not in meta, path.name
        assert meta["generateName"].endswith("-"), path.name
    files = [README, *TEMPLATE_FILES, *sorted(K8S.glob("rayjob-*.yaml")), K8S / "raycluster.yaml"]
    texts = {p: p.read_text(encoding="utf-8") for p in files}
    uses = [(p.name, verb) for p, text in texts.items() for verb in KUBECTL_ON_RAYJOB.findall(text)]
    assert {name for name, _ in uses} >= {
        "README.md",
        "rayjob-train.yaml",
        "rayjob-sweep.yaml",
        "rayjob-train.yaml.in",
        "rayjob-sweep.yaml.in",
    }
    assert all(verb == "create" for _, verb in uses), uses
    for path, text in texts.items():
        assert not re.search(r"re-?appl", text, re.I), path.name  # "re-applying reruns it"
        # the submitter Job is named after the RayJob: generated too, never a fixed name
        assert not re.search(r"job/biogner-(train|sweep)\b", text), path.name
    readme = texts[README]
    assert "job=$(kubectl create -f infra/k8s/rayjob-train.yaml -o name)" in readme
    assert 'kubectl logs -f "job/${job#*/}"' in readme


def test_tampered_rayjob_names_are_caught() -> None:
    job = copy.deepcopy(docs_of("RayJob")[0][1])
    job["metadata"]["name"] = "biogner-train"
    assert any("exactly one of name, generateName" in e for e in validate_manifest(job))
    del job["metadata"]["name"]
    job["metadata"]["generateName"] = "biogner-train"
    assert any("metadata.generateName" in e for e in validate_manifest(job))
    uses = KUBECTL_ON_RAYJOB.findall("kubectl apply -f infra/k8s/rayjob-train.yaml")
    assert uses == ["apply"]


def test_ray_cluster_and_service_names_and_their_head_services_are_distinct() -> None:
    docs = [d for _, d in ALL_DOCS]
    fixed = [d["metadata"]["name"] for d in docs if d["kind"] in ("RayCluster", "RayService")]
    assert len(fixed) == len(set(fixed)) == 2
    services = [
        *head_service_names(docs),
        *sorted(serve_service_names()),
        *(d["metadata"]["name"] for d in docs if d["kind"] == "Service"),
    ]
    assert len(services) == len(set(services)), services
    # every `svc/<name>` the instructions use is one of these Services
    for path in [README, *MANIFESTS, *TEMPLATE_FILES]:
        for ref in re.findall(r"svc/([\w-]+)", path.read_text(encoding="utf-8")):
            assert ref in services, (path.name, ref)
    # the Ray token Secret KubeRay creates is named after the RayCluster
    clusters = {d["metadata"]["name"] for d in docs if d["kind"] == "RayCluster"}
    tokens = re.findall(r"kubectl get secret ([\w-]+) .*auth_token", README.read_text())
    assert tokens and set(tokens) <= clusters
    # the clash this guards against: both named `biogner`, two `biogner-head-svc`
    clash = copy.deepcopy(docs)
    for doc in clash:
        if doc["kind"] == "RayCluster":
            doc["metadata"]["name"] = "biogner"
    names = head_service_names(clash)
    assert len(names) != len(set(names))


def test_ray_dashboard_is_not_exposed_outside_the_cluster() -> None:
    for name, spec in cluster_specs():
        head = spec["headGroupSpec"]
        assert head.get("serviceType", "ClusterIP") == "ClusterIP", name
        assert not head.get("enableIngress", False), name
        head_service = head.get("headService") or {}
        assert head_service.get("spec", {}).get("type", "ClusterIP") == "ClusterIP", name
    kinds = {d["kind"] for _, d in ALL_DOCS}
    assert not kinds & {"Ingress", "Route", "Gateway", "HTTPRoute", "IngressRoute"}
    for _, service in docs_of("Service"):
        assert service["spec"].get("type", "ClusterIP") == "ClusterIP", service["metadata"]
    for _, rayservice in docs_of("RayService"):
        serve_service = rayservice["spec"].get("serveService") or {}
        ports = serve_service.get("spec", {}).get("ports", [])
        assert 8265 not in {p.get("port") for p in ports}


def test_ray_token_auth_is_on_for_every_cluster() -> None:
    for name, spec in cluster_specs():
        auth = spec["authOptions"]
        assert auth["mode"] == "token", name
        # K8s-delegated auth is unsupported for RayJob and RayService (KubeRay 1.7)
        assert not auth.get("enableK8sTokenAuth", False), name
        major, minor = (int(x) for x in spec["rayVersion"].split(".")[:2])
        assert (major, minor) >= (2, 52), name  # KubeRay rejects token auth on older Ray
    # KubeRay gives the submitters the token and their `ray job submit` command: leave them
    # its default submitter (name, the head's image, no command), plus the client label.
    head_image = _raycluster()["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0][
        "image"
    ]
    submitters = list(submitter_pod_templates())
    assert len(submitters) == len(docs_of("RayJob"))
    for name, template in submitters:
        assert template["spec"]["restartPolicy"] == "Never", name
        (container,) = template["spec"]["containers"]
        assert container["name"] == "ray-job-submitter", name
        assert container["image"] == head_image, name
        assert "command" not in container and "args" not in container, name
        assert template["metadata"]["labels"]["biogner/ray-client"] == "true", name


# A small model of Kubernetes NetworkPolicy ingress semantics, enough to read the policy in
# infra/k8s/network-policy.yaml for sample sources (matchLabels selectors, TCP ports).
POLICY_NAMESPACE = "biogner"  # the namespace the manifests are applied to (they name none)


@dataclass(frozen=True)
class Source:
    """A connection's origin: a pod (its labels, namespace and namespace labels), or with
    `labels` None an address outside the cluster."""

    labels: dict[str, str] | None
    namespace: str = POLICY_NAMESPACE
    namespace_labels: dict[str, str] = field(default_factory=dict)


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    assert set(selector) <= {"matchLabels"}, f"not evaluated here: {selector}"
    return selector.get("matchLabels", {}).items() <= labels.items()


def _peer_admits(peer: dict[str, Any], source: Source) -> bool:
    assert peer and "ipBlock" not in peer, f"not evaluated here: {peer}"
    if source.labels is None:
        return False  # pod and namespace selectors match pods only
    if "namespaceSelector" in peer:
        if not _selects(peer["namespaceSelector"], source.namespace_labels):
            return False
    elif source.namespace != POLICY_NAMESPACE:
        return False  # a podSelector alone means the policy's own namespace
    return _selects(peer.get("podSelector", {}), source.labels)


def _port_admits(rule_port: dict[str, Any], port: int) -> bool:
    if rule_port.get("protocol", "TCP") != "TCP":
        return False
    if "port" not in rule_port:
        return True
    assert isinstance(rule_port["port"], int), "named ports are not evaluated here"
    return rule_port["port"] <= port <= rule_port.get("endPort", rule_port["port"])


def network_policy_allows(
    policies: list[dict[str, Any]], pod_labels: dict[str, str], port: int, source: Source
) -> bool:
    """Whether a TCP connection from `source` to `port` of a pod with `pod_labels` (in
    POLICY_NAMESPACE) is admitted. A pod no policy selects admits everything; a selected pod
    admits what some ingress rule of a selecting policy admits (an empty or missing `from`
    means every source, an empty or missing `ports` every port)."""
    selecting = [
        p
        for p in policies
        if "Ingress" in p["spec"].get("policyTypes", ["Ingress"])
        and _selects(p["spec"]["podSelector"], pod_labels)
    ]
    if not selecting:
        return True
    for policy in selecting:
        for rule in policy["spec"].get("ingress", []):
            ports = rule.get("ports")
            if ports and not any(_port_admits(p, port) for p in ports):
                continue
            peers = rule.get("from")
            if not peers or any(_peer_admits(peer, source) for peer in peers):
                return True
    return False


RAY_PORTS = (6379, 8265, 10001, 52365, 20001)  # GCS, dashboard, client, agent, a worker port
OPERATOR = Source(
    {"app.kubernetes.io/name": "kuberay-operator", "app.kubernetes.io/instance": "kuberay"},
    "kuberay-system",
    {"kubernetes.io/metadata.name": "kuberay-system"},
)


def _outsiders() -> dict[str, Source]:
    """Sources that must not reach Ray's ports: this namespace's other pods, a pod elsewhere,
    an address outside the cluster."""
    ((_, data_job),) = docs_of("Job")
    (mlflow,) = [d for _, d in docs_of("Deployment") if d["metadata"]["name"] == "mlflow"]
    return {
        "data job pod": Source(data_job["spec"]["template"]["metadata"]["labels"]),
        "mlflow pod": Source(mlflow["spec"]["template"]["metadata"]["labels"]),
        "pod in another namespace": Source(
            {"app": "x"}, "other", {"kubernetes.io/metadata.name": "other"}
        ),
        "outside the cluster": Source(None),
    }


def test_network_policy_guards_the_ray_ports_and_opens_the_serve_port() -> None:
    policies = [d for _, d in docs_of("NetworkPolicy")]
    assert policies
    ray_pods = {name: t["metadata"]["labels"] for name, t in ray_pod_templates()}
    submitters = [t["metadata"]["labels"] for _, t in submitter_pod_templates()]
    outsiders = _outsiders()
    for pod, labels in ray_pods.items():
        assert any(_selects(p["spec"]["podSelector"], labels) for p in policies), pod
        for other in ray_pods.values():  # Ray pods reach each other on every port
            for port in RAY_PORTS:
                assert network_policy_allows(policies, labels, port, Source(other)), (pod, port)
        for what, source in [*outsiders.items(), ("operator", OPERATOR)]:
            # the NER endpoint is open to all (it checks the Bearer key itself)
            assert network_policy_allows(policies, labels, 8000, source), (pod, what)
        for what, source in outsiders.items():
            for port in RAY_PORTS:
                assert not network_policy_allows(policies, labels, port, source), (pod, what, port)
        if pod.endswith(":head"):
            for submitter in submitters:  # job submission and the Ray client, nothing else
                assert network_policy_allows(policies, labels, 8265, Source(submitter))
                assert network_policy_allows(policies, labels, 10001, Source(submitter))
                assert not network_policy_allows(policies, labels, 6379, Source(submitter))
            assert network_policy_allows(policies, labels, 8265, OPERATOR)
            for port in (6379, 10001, 52365):
                assert not network_policy_allows(policies, labels, port, OPERATOR), port


def test_network_policy_model_sees_an_opened_or_unselected_pod() -> None:
    (policy,) = [
        copy.deepcopy(d)
        for _, d in docs_of("NetworkPolicy")
        if d["metadata"]["name"] == "biogner-ray"
    ]
    head = _raycluster()["spec"]["headGroupSpec"]["template"]["metadata"]["labels"]
    stranger = Source({"app": "x"})
    assert not network_policy_allows([policy], head, 8265, stranger)
    opened = copy.deepcopy(policy)
    opened["spec"]["ingress"].append({})  # a rule with no from and no ports admits everything
    assert network_policy_allows([opened], head, 8265, stranger)
    widened = copy.deepcopy(policy)
    (open_rule,) = [r for r in widened["spec"]["ingress"] if "from" not in r]
    open_rule["ports"].append({"protocol": "TCP", "port": 8265})  # dashboard beside the endpoint
    assert network_policy_allows([widened], head, 8265, Source(None))
    unlabelled = {k: v for k, v in head.items() if k != "biogner/ray-node"}
    assert network_policy_allows([policy], unlabelled, 8265, Source(None))  # not isolated
    anywhere = copy.deepcopy(policy)
    for rule in anywhere["spec"]["ingress"]:
        for peer in rule.get("from", []):
            if "biogner/ray-client" in peer.get("podSelector", {}).get("matchLabels", {}):
                peer["namespaceSelector"] = {}  # labelled pods of any namespace
    elsewhere = Source({"biogner/ray-client": "true"}, "other")
    assert not network_policy_allows([policy], head, 8265, elsewhere)
    assert network_policy_allows([anywhere], head, 8265, elsewhere)


# --------------------------------------------------------------------------- MLflow auth, pods

TOKEN_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"
INGRESS = Source(
    {"app.kubernetes.io/name": "ingress-nginx"},
    "ingress-nginx",
    {"kubernetes.io/metadata.name": "ingress-nginx"},
)


def _labels_of(kind: str, name: str) -> dict[str, str]:
    (doc,) = [d for _, d in docs_of(kind) if d["metadata"]["name"] == name]
    return dict(doc["spec"]["template"]["metadata"]["labels"])


def test_mlflow_admits_only_the_ray_pods_submitters_and_the_ui_ingress() -> None:
    policies = [d for _, d in docs_of("NetworkPolicy")]
    server = _labels_of("Deployment", "mlflow")
    database = _labels_of("StatefulSet", "mlflow-postgres")
    clients = [t["metadata"]["labels"] for _, t in ray_pod_templates()]
    clients += [t["metadata"]["labels"] for _, t in submitter_pod_templates()]
    for labels in clients:
        assert network_policy_allows(policies, server, 5000, Source(labels))
        assert not network_policy_allows(policies, database, 5432, Source(labels))
    assert network_policy_allows(policies, server, 5000, INGRESS)
    outsiders = _outsiders()
    outsiders.pop("mlflow pod")
    for what, source in outsiders.items():
        assert not network_policy_allows(policies, server, 5000, source), what
        assert not network_policy_allows(policies, database, 5432, source), what
    assert network_policy_allows(policies, database, 5432, Source(server))
    assert not network_policy_allows(policies, database, 5432, INGRESS)


def test_mlflow_requires_an_account_and_every_ray_pod_has_one(tmp_path: Path) -> None:
    container = _mlflow_server()
    assert "--app-name=basic-auth" in container["args"]
    env = {e["name"]: e for e in container["env"]}
    created = readme_secrets()
    for var in ("MLFLOW_AUTH_ADMIN_USERNAME", "MLFLOW_AUTH_ADMIN_PASSWORD"):
        ref = env[var]["valueFrom"]["secretKeyRef"]
        assert not ref.get("optional") and ref["key"] in created[ref["name"]], var
    # the init container's script, run here, writes the ini the server reads
    (deployment,) = [d for _, d in docs_of("Deployment") if d["metadata"]["name"] == "mlflow"]
    (init,) = deployment["spec"]["template"]["spec"]["initContainers"]
    (mount,) = init["volumeMounts"]
    config_path = Path(env["MLFLOW_AUTH_CONFIG_PATH"]["value"])
    assert config_path.parent == Path(mount["mountPath"])
    script = init["args"][0].replace(mount["mountPath"], str(tmp_path))
    secrets = {"DB_USER": "u", "DB_PASSWORD": "p4ss", "DB_NAME": "mlflow"}
    subprocess.run([*init["command"], script], env=secrets, check=True)
    ini = configparser.ConfigParser()
    ini.read(tmp_path / config_path.name)
    assert ini["mlflow"]["default_permission"] == "NO_PERMISSIONS"  # new accounts see nothing
    assert ini["mlflow"]["database_uri"] == "postgresql://u:p4ss@mlflow-postgres:5432/mlflow"
    assert "p4ss" not in " ".join(init["args"])  # read from the environment at run time
    dockerfile = (DOCKER / "Dockerfile.mlflow").read_text(encoding="utf-8")
    assert f"'mlflow[auth]=={MLFLOW_VERSION}'" in dockerfile
    for name, template in [*ray_pod_templates()]:
        for c in template["spec"]["containers"]:
            cenv = {e["name"]: e for e in c.get("env", [])}
            assert cenv["MLFLOW_TRACKING_URI"]["value"] == MLFLOW_URI, name
            for var in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
                ref = cenv[var]["valueFrom"]["secretKeyRef"]
                assert not ref.get("optional"), (name, var)
                assert ref["key"] in created[ref["name"]], (name, var)


def secrets_on_command_lines(container: dict[str, Any]) -> list[str]:
    """The $(VAR) references of a container's command and args that Kubernetes would expand
    into something other than a plain value (a Secret, or a value composed from one): such a
    value is on the process's command line, which `ps` shows to every user of the node."""
    plain: set[str] = set()
    for e in container.get("env", []):
        composed_of = set(re.findall(r"\$\((\w+)\)", e.get("value", "")))
        if ("value" in e and composed_of <= plain) or "fieldRef" in e.get("valueFrom", {}):
            plain.add(e["name"])
    argv = [*container.get("command", []), *container.get("args", [])]
    return [
        f"{container['name']}: $({var}) on the command line"
        for arg in argv
        for var in re.findall(r"\$\((\w+)\)", arg)
        if var not in plain
    ]


def _every_container() -> Iterator[tuple[str, dict[str, Any]]]:
    for name, template in all_pod_templates():
        spec = template["spec"]
        for c in [*spec.get("initContainers", []), *spec["containers"]]:
            yield f"{name}:{c['name']}", c


def test_no_secret_reaches_a_command_line() -> None:
    problems = [p for _, c in _every_container() for p in secrets_on_command_lines(c)]
    assert not problems, problems
    tampered = copy.deepcopy(_mlflow_server())  # the URI back on the command line
    tampered["args"].append("--backend-store-uri=$(MLFLOW_BACKEND_STORE_URI)")
    assert secrets_on_command_lines(tampered) == [
        "mlflow: $(MLFLOW_BACKEND_STORE_URI) on the command line"
    ]


def pod_security_problems(name: str, template: dict[str, Any]) -> list[str]:
    """What keeps a pod from running unprivileged: root, escalation, capabilities, an API token
    where job code runs, a writable root filesystem outside the Ray containers."""
    spec = template["spec"]
    ray_node = template["metadata"].get("labels", {}).get("biogner/ray-node") == "true"
    problems = []
    if spec.get("automountServiceAccountToken") is not False:
        problems.append(f"{name}: automountServiceAccountToken is not false")
    pod = spec.get("securityContext", {})
    if pod.get("runAsNonRoot") is not True or pod.get("runAsUser", 0) == 0:
        problems.append(f"{name}: not runAsNonRoot with a non-zero runAsUser")
    if pod.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        problems.append(f"{name}: no RuntimeDefault seccomp profile")
    for c in [*spec.get("initContainers", []), *spec["containers"]]:
        where, sc = f"{name}:{c['name']}", c.get("securityContext", {})
        if sc.get("allowPrivilegeEscalation") is not False or sc.get("privileged"):
            problems.append(f"{where}: may escalate privileges")
        if "ALL" not in sc.get("capabilities", {}).get("drop", []) or sc["capabilities"].get("add"):
            problems.append(f"{where}: keeps capabilities")
        if sc.get("runAsUser") == 0 or sc.get("runAsNonRoot") is False:
            problems.append(f"{where}: runs as root")
        if not ray_node and sc.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{where}: writable root filesystem")
        if any(m["mountPath"].startswith(TOKEN_PATH) for m in c.get("volumeMounts", [])):
            problems.append(f"{where}: mounts a Kubernetes API token")
    return problems


def test_every_pod_runs_unprivileged() -> None:
    templates = list(all_pod_templates())
    assert len(templates) >= 14  # 4 clusters x 3 groups, 2 submitters, mlflow, postgres, data
    problems = [p for name, t in templates for p in pod_security_problems(name, t)]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    ("tamper", "expected"),
    [
        (lambda s: s.pop("automountServiceAccountToken"), "automountServiceAccountToken"),
        (lambda s: s["securityContext"].update(runAsUser=0), "runAsNonRoot"),
        (lambda s: s["securityContext"].pop("seccompProfile"), "seccomp"),
        (
            lambda s: s["containers"][0]["securityContext"].update(privileged=True),
            "escalate",
        ),
        (
            lambda s: s["containers"][0]["securityContext"]["capabilities"].update(add=["NET_RAW"]),
            "capabilities",
        ),
        (
            lambda s: s["containers"][0]["securityContext"].pop("readOnlyRootFilesystem"),
            "writable root",
        ),
        (
            lambda s: s["containers"][0]["volumeMounts"].append(
                {"name": "t", "mountPath": TOKEN_PATH}
            ),
            "API token",
        ),
    ],
    ids=["token", "root", "seccomp", "privileged", "cap-add", "rw-root", "token-mount"],
)
def test_pod_security_check_catches_a_tampered_pod(tamper: Any, expected: str) -> None:
    (deployment,) = [d for _, d in docs_of("Deployment") if d["metadata"]["name"] == "mlflow"]
    template = copy.deepcopy(deployment["spec"]["template"])
    assert pod_security_problems("mlflow", template) == []
    tamper(template["spec"])
    problems = pod_security_problems("mlflow", template)
    assert any(expected in p for p in problems), problems


def test_only_the_autoscaler_gets_a_kubernetes_api_token() -> None:
    for name, spec in cluster_specs():
        options = spec["autoscalerOptions"]
        (mount,) = options["volumeMounts"]
        assert mount["mountPath"] == TOKEN_PATH and mount["readOnly"] is True, name
        assert options["securityContext"]["allowPrivilegeEscalation"] is False, name
        assert "ALL" in options["securityContext"]["capabilities"]["drop"], name
        head = spec["headGroupSpec"]["template"]["spec"]
        (volume,) = [v for v in head["volumes"] if v["name"] == mount["name"]]
        sources = volume["projected"]["sources"]
        assert any("serviceAccountToken" in src for src in sources), name
        assert head["automountServiceAccountToken"] is False, name
    for where, c in _every_container():  # no Ray or other container mounts it
        assert all(m["name"] != "autoscaler-token" for m in c.get("volumeMounts", [])), where


def test_vm_cluster_guards_mlflow_and_keeps_the_dashboard_local() -> None:
    config = yaml.safe_load(VM_CLUSTER.read_text(encoding="utf-8"))
    head = " ".join(config["head_start_ray_commands"])
    workers = " ".join(config["worker_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head and "0.0.0.0" not in head.split("mlflow server")[0]
    (server,) = [c for c in config["head_start_ray_commands"] if "mlflow server" in c]
    assert "--app-name basic-auth" in server
    assert "MLFLOW_AUTH_ADMIN_PASSWORD=$MLFLOW_TRACKING_PASSWORD" in server  # from the env file
    auth_env = "/mnt/shared/.mlflow-auth.env"
    (ray_head,) = [c for c in config["head_start_ray_commands"] if "ray start --head" in c]
    assert f". {auth_env}" in ray_head and f". {auth_env}" in workers  # jobs log in
    assert "umask 077" in head and "openssl rand" in head  # drawn, not written in the file
    assert "MLFLOW_FLASK_SERVER_SECRET_KEY=%s" in head  # the auth app refuses to start without
    assert "dashboard-host=0.0.0.0" not in head + workers


# --------------------------------------------------------------------------- entry points


def _entrypoint(name: str) -> list[str]:
    (doc,) = [d for _, d in docs_of("RayJob") if d["metadata"]["generateName"] == f"{name}-"]
    return shlex.split(doc["spec"]["entrypoint"])


def _script_and_config(argv: list[str]) -> tuple[Path, Path, list[str]]:
    assert argv[0] == "python" and argv[2] == "--config", argv
    script, config = ROOT / argv[1], ROOT / argv[3]
    assert script.is_file(), f"entrypoint names a missing file {argv[1]}"
    assert config.is_file(), f"entrypoint names a missing config {argv[3]}"
    return script, config, argv[4:]


def test_rayjob_train_entrypoint_names_files_and_a_valid_config() -> None:
    from biogner.config import load_config
    from biogner.train.config import TrainConfig

    script, config, overrides = _script_and_config(_entrypoint("biogner-train"))
    assert script == ROOT / "jobs" / "train.py"
    cfg = load_config(TrainConfig, config, overrides)
    assert cfg.tracking.uri == MLFLOW_URI
    assert cfg.scaling.storage_path.startswith(SHARED_MOUNT + "/")  # checkpoints survive pods
    assert cfg.data.converted_dir.startswith(SHARED_MOUNT + "/")
    assert cfg.scaling.use_gpu
    gpus = max(g["maxReplicas"] for g in _raycluster()["spec"]["workerGroupSpecs"])
    assert cfg.scaling.num_workers <= gpus  # the GPU group can grow to fit the run


def test_rayjob_sweep_entrypoint_names_files_and_a_valid_sweep() -> None:
    from biogner.study.config import load_sweep
    from biogner.study.sweep import cell_train_config

    script, config, overrides = _script_and_config(_entrypoint("biogner-sweep"))
    assert script == ROOT / "jobs" / "sweep.py"
    sweep = load_sweep(config, overrides)
    assert sweep.tracking.uri == MLFLOW_URI
    assert sweep.base is not None and (ROOT / sweep.base).is_file()
    cells = sweep.cells()
    assert cells
    cell = cell_train_config(sweep, cells[0])  # base + the sweep's overrides, validated
    assert cell.scaling.storage_path.startswith(SHARED_MOUNT + "/")
    assert cell.tracking.uri == MLFLOW_URI


def test_a_tampered_entrypoint_is_caught() -> None:
    from biogner.config import ConfigError, load_config
    from biogner.train.config import TrainConfig

    argv = _entrypoint("biogner-train")
    with pytest.raises(AssertionError, match="missing file"):
        _script_and_config([argv[0], "jobs/trian.py", *argv[2:]])
    _, config, overrides = _script_and_config(argv)
    with pytest.raises(ConfigError, match="storage_pth"):
        load_config(TrainConfig, config, [*overrides, "scaling.storage_pth=/x"])


def test_data_job_runs_a_real_cli_command() -> None:
    from biogner.cli import build_parser

    ((_, job),) = docs_of("Job")
    (container,) = job["spec"]["template"]["spec"]["containers"]
    command = container["command"]
    assert command[0] == "biogner"
    args = build_parser().parse_args(command[1:])  # exits (SystemExit) on a bad command
    assert args.to.startswith(SHARED_MOUNT + "/")


# --------------------------------------------------------------------------- images


@dataclass(frozen=True)
class Instruction:
    op: str
    args: str


def dockerfile(path: Path) -> list[Instruction]:
    """Instructions of a Dockerfile, continuation lines joined, comments dropped."""
    out: list[Instruction] = []
    pending = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        op, _, args = line.partition(" ")
        out.append(Instruction(op.upper(), args.strip()))
    return out


def copy_sources(instructions: list[Instruction]) -> list[str]:
    sources = []
    for ins in instructions:
        if ins.op in ("COPY", "ADD"):
            parts = [p for p in shlex.split(ins.args) if not p.startswith("--")]
            sources.extend(parts[:-1])
    return sources


# image built from repo context -> its Dockerfile
IMAGES = {
    f"{REGISTRY}biogner:{VERSION}": DOCKER / "Dockerfile",
    f"{REGISTRY}biogner:{VERSION}-cuda": DOCKER / "Dockerfile.cuda",
    f"{REGISTRY}mlflow:{MLFLOW_VERSION}": DOCKER / "Dockerfile.mlflow",
}


def test_every_image_is_built_by_a_dockerfile_here() -> None:
    used = {
        c["image"]
        for _, t in all_pod_templates()
        for c in t["spec"]["containers"]
        if c["image"].startswith(REGISTRY)
    }
    assert used, "no image from the project registry"
    assert used <= set(IMAGES), used - set(IMAGES)
    for image in used:
        path = IMAGES[image]
        assert path.is_file(), image
        # the build command in the Dockerfile's header produces exactly this tag
        assert f"-f {path.relative_to(ROOT)} -t {image} " in path.read_text(), (image, path)
    ray_images = {c["image"] for _, t in ray_pod_templates() for c in t["spec"]["containers"]}
    assert ray_images == {f"{REGISTRY}biogner:{VERSION}-cuda"}


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.cuda"])
def test_package_dockerfiles_copy_existing_files_and_install_the_package(name: str) -> None:
    instructions = dockerfile(DOCKER / name)
    sources = copy_sources(instructions)
    for src in sources:
        assert (ROOT / src).exists(), f"{name}: COPY {src} does not exist"
    # the package's build inputs and the job/serve files are in the image
    assert {"pyproject.toml", "README.md", "platform/", "jobs/", "serve_configs/"} <= set(sources)
    runs = " ".join(i.args for i in instructions if i.op == "RUN")
    for req in re.findall(r"-r (\S+)", runs):
        assert (ROOT / req).is_file(), f"{name}: pip -r {req} does not exist"
    for extra in re.findall(r'"\.\[(\w+)\]"', runs):
        assert extra in PYPROJECT["project"]["optional-dependencies"], extra
    assert re.search(r'pip install (?:\. |"\.\[)', runs), f"{name}: does not install the package"
    workdir = [i.args for i in instructions if i.op == "WORKDIR"]
    assert workdir == ["/app"]  # the pods' workingDir: entrypoints are relative to it
    for _, template in ray_pod_templates():
        assert template["spec"]["containers"][0]["workingDir"] == "/app"
    assert not [i for i in instructions if i.op == "ENTRYPOINT"]  # KubeRay sets the command


def test_cuda_image_base_carries_the_pinned_ray() -> None:
    (base,) = [i.args for i in dockerfile(DOCKER / "Dockerfile.cuda") if i.op == "FROM"]
    assert base.startswith(f"rayproject/ray:{RAY_VERSION}-py311"), base


def test_mlflow_image_matches_the_client_pin() -> None:
    instructions = dockerfile(DOCKER / "Dockerfile.mlflow")
    assert copy_sources(instructions) == []  # built from infra/docker, copies nothing
    runs = " ".join(i.args for i in instructions if i.op == "RUN")
    assert f"'mlflow[auth]=={MLFLOW_VERSION}'" in runs  # basic auth: --app-name basic-auth
    assert "psycopg2" in runs and "boto3" in runs  # PostgreSQL store, S3 artifacts


def test_dockerignore_example_keeps_every_copied_path() -> None:
    lines = [
        ln.strip()
        for ln in (DOCKER / "dockerignore.example").read_text().splitlines()
        if ln.strip() and not ln.startswith("#")
    ]
    assert lines[0] == "*"
    kept = {ln[1:].rstrip("/") for ln in lines if ln.startswith("!")}
    for name in ("Dockerfile", "Dockerfile.cuda"):
        for src in copy_sources(dockerfile(DOCKER / name)):
            assert src.rstrip("/") in kept, f"{name}: COPY {src} is excluded by .dockerignore"


def test_dockerfile_parser_sees_a_missing_copy_source(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text(
        (DOCKER / "Dockerfile").read_text().replace("COPY jobs/ jobs/", "COPY job/ jobs/")
    )
    missing = [s for s in copy_sources(dockerfile(bad)) if not (ROOT / s).exists()]
    assert missing == ["job/"]


# --------------------------------------------------------------------------- VM cluster


def _validate_cluster_launcher(config: dict[str, Any]) -> dict[str, Any]:
    """Ray's own cluster-launcher schema, the `ray-schema.json` that `ray up` checks a
    cluster file against, and its check that the node types' `min_workers` fit the cluster's
    `max_workers`."""
    import importlib.resources
    import json

    import jsonschema

    schema = importlib.resources.files("ray.autoscaler").joinpath("ray-schema.json")
    jsonschema.validate(config, json.loads(schema.read_text()))
    if "max_workers" in config:
        types = config["available_node_types"].values()
        assert sum(t.get("min_workers", 0) for t in types) <= config["max_workers"]
    return copy.deepcopy(config)


def test_vm_cluster_yaml_passes_the_ray_cluster_launcher_schema() -> None:
    config = yaml.safe_load(VM_CLUSTER.read_text(encoding="utf-8"))
    for key in ("cluster_name", "provider", "available_node_types", "head_node_type"):
        assert key in config, key
    assert config["head_node_type"] in config["available_node_types"]
    prepared = _validate_cluster_launcher(config)
    head = prepared["available_node_types"][prepared["head_node_type"]]
    assert head["resources"] == {"CPU": 0}  # the head runs drivers only, like the KubeRay head
    workers = [t for n, t in prepared["available_node_types"].items() if n != "head"]
    assert all(t["max_workers"] >= 1 for t in workers)


def test_vm_cluster_commands_name_files_in_the_repo() -> None:
    config = yaml.safe_load(VM_CLUSTER.read_text(encoding="utf-8"))
    (remote,) = [r for r, local in config["file_mounts"].items() if local == "."]
    commands = " ".join(
        c
        for key in ("setup_commands", "head_setup_commands", "worker_setup_commands")
        for c in config[key]
    )
    home_repo = "~/" + Path(remote).name
    referenced = re.findall(rf"{re.escape(home_repo)}/([\w./-]+)", commands)
    assert referenced
    for rel in referenced:
        assert (ROOT / rel).exists(), rel
    for extra in re.findall(r"biogner\[(\w+)\]", commands):
        assert extra in PYPROJECT["project"]["optional-dependencies"], extra
    header = " ".join(
        line.lstrip("# ").rstrip("\\ ")
        for line in VM_CLUSTER.read_text().split("cluster_name:")[0].splitlines()
    )
    recipes = re.findall(r"python (jobs/\S+\.py) +--config (\S+)", header)
    assert recipes, "the header shows no job submission"
    for script, cfg in recipes:
        assert (ROOT / script).is_file() and (ROOT / cfg).is_file(), (script, cfg)


def test_cluster_launcher_schema_rejects_a_broken_config() -> None:
    config = yaml.safe_load(VM_CLUSTER.read_text(encoding="utf-8"))
    broken = copy.deepcopy(config)
    broken["available_node_types"]["gpu_worker"].pop("node_config")
    with pytest.raises(Exception, match="node_config"):
        _validate_cluster_launcher(broken)
    broken = copy.deepcopy(config)
    broken["head_setup_command"] = broken.pop("head_setup_commands")
    with pytest.raises(Exception, match="head_setup_command"):
        _validate_cluster_launcher(broken)
