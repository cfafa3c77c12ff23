"""infra/ checked offline: every manifest parses and uses only fields its kind defines, the
generated manifests are up to date with what they embed, and every image, entry point, config
and file they name exists in this repository. No cluster, no network, no Ray runtime.
"""

from __future__ import annotations

import copy
import importlib.util
import re
import shlex
import shutil
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

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
# A field-level schema of what the manifests use. The Ray kinds follow KubeRay's v1 API, from
# ray-project/kuberay ray-operator/apis/ray/v1/{raycluster,rayjob,rayservice}_types.go (the
# json tags; the CRDs in ray-operator/config/crd/bases/ray.io_*.yaml are generated from them).
# Only fields present since KubeRay v1.3 are allowed, so the manifests apply on any current
# operator, except `authOptions` (Ray token auth: KubeRay >= 1.5.1, Ray >= 2.52; an older
# operator's CRD would drop it silently, which is why infra/README.md names the minimum).
# Pod templates follow the Kubernetes core/v1 API (PodTemplateSpec, PodSpec, Container); core
# types that the manifests pass through untouched are `ANY`. NetworkPolicy follows
# networking.k8s.io/v1.


@dataclass(frozen=True)
class Spec:
    """A node of the schema: the kind of value allowed at one place in a manifest."""

    kind: str  # obj, map, list, str, int, num, bool, quantity, enum, any
    fields: dict[str, Spec] = field(default_factory=dict)
    required: frozenset[str] = frozenset()
    item: Spec | None = None
    values: frozenset[Any] = frozenset()


def obj(required: tuple[str, ...] = (), **fields: Spec) -> Spec:
    return Spec("obj", fields=fields, required=frozenset(required))


def map_of(item: Spec) -> Spec:
    return Spec("map", item=item)


def list_of(item: Spec) -> Spec:
    return Spec("list", item=item)


def enum(*values: Any) -> Spec:
    return Spec("enum", values=frozenset(values))


STR, INT, NUM, BOOL = Spec("str"), Spec("int"), Spec("num"), Spec("bool")
QUANTITY, ANY = Spec("quantity"), Spec("any")


def validate(value: Any, spec: Spec, path: str = "") -> list[str]:
    """Every place where `value` leaves `spec`, as 'dotted.path: problem'."""
    where = path or "<root>"
    if spec.kind == "any":
        return []
    if spec.kind == "obj":
        if not isinstance(value, dict):
            return [f"{where}: expected a mapping, got {type(value).__name__}"]
        missing = sorted(spec.required - set(value))
        errors = [f"{where}: missing required field {k!r}" for k in missing]
        for key, sub in value.items():
            child = f"{path}.{key}" if path else str(key)
            if key not in spec.fields:
                errors.append(f"{child}: unknown field (allowed: {', '.join(sorted(spec.fields))})")
            else:
                errors.extend(validate(sub, spec.fields[key], child))
        return errors
    if spec.kind in ("map", "list"):
        assert spec.item is not None
        if spec.kind == "map" and isinstance(value, dict):
            items = [(f"{path}.{k}", v) for k, v in value.items()]
        elif spec.kind == "list" and isinstance(value, list):
            items = [(f"{path}[{i}]", v) for i, v in enumerate(value)]
        else:
            return [f"{where}: expected a {spec.kind}, got {type(value).__name__}"]
        return [e for child, v in items for e in validate(v, spec.item, child)]
    ok = {
        "str": isinstance(value, str),
        "int": isinstance(value, int) and not isinstance(value, bool),
        "num": isinstance(value, int | float) and not isinstance(value, bool),
        "bool": isinstance(value, bool),
        "quantity": isinstance(value, str | int) and not isinstance(value, bool),
        "enum": value in spec.values,
    }[spec.kind]
    if ok:
        return []
    expected = sorted(map(str, spec.values)) if spec.kind == "enum" else spec.kind
    return [f"{where}: expected {expected}, got {value!r}"]


# name or generateName (exactly one, checked by validate_manifest for top-level objects)
OBJECT_META = obj(
    name=STR, generateName=STR, namespace=STR, labels=map_of(STR), annotations=map_of(STR)
)
TEMPLATE_META = obj(labels=map_of(STR), annotations=map_of(STR))
PULL_POLICY = enum("Always", "IfNotPresent", "Never")
KEY_REF = obj(("key",), name=STR, key=STR, optional=BOOL)
ENV_VAR = obj(
    ("name",),
    name=STR,
    value=STR,  # a number here is rejected by the API server
    valueFrom=obj(secretKeyRef=KEY_REF, configMapKeyRef=KEY_REF, fieldRef=ANY),
)
ENV_FROM = obj(prefix=STR, secretRef=obj(name=STR, optional=BOOL), configMapRef=ANY)
RESOURCES = obj(requests=map_of(QUANTITY), limits=map_of(QUANTITY))
VOLUME_MOUNT = obj(("name", "mountPath"), name=STR, mountPath=STR, subPath=STR, readOnly=BOOL)
CONTAINER = obj(
    ("name", "image"),
    name=STR,
    image=STR,
    imagePullPolicy=PULL_POLICY,
    command=list_of(STR),
    args=list_of(STR),
    workingDir=STR,
    ports=list_of(
        obj(("containerPort",), containerPort=INT, name=STR, protocol=enum("TCP", "UDP"))
    ),
    env=list_of(ENV_VAR),
    envFrom=list_of(ENV_FROM),
    resources=RESOURCES,
    volumeMounts=list_of(VOLUME_MOUNT),
    readinessProbe=ANY,
    livenessProbe=ANY,
    startupProbe=ANY,
    lifecycle=ANY,
    securityContext=ANY,
)
VOLUME = obj(
    ("name",),
    name=STR,
    persistentVolumeClaim=obj(("claimName",), claimName=STR, readOnly=BOOL),
    emptyDir=obj(medium=STR, sizeLimit=QUANTITY),
    secret=ANY,
    configMap=ANY,
)
POD_SPEC = obj(
    ("containers",),
    containers=list_of(CONTAINER),
    initContainers=list_of(CONTAINER),
    volumes=list_of(VOLUME),
    tolerations=list_of(
        obj(
            key=STR,
            operator=enum("Exists", "Equal"),
            value=STR,
            effect=enum("NoSchedule", "PreferNoSchedule", "NoExecute"),
            tolerationSeconds=INT,
        )
    ),
    nodeSelector=map_of(STR),
    affinity=ANY,
    securityContext=ANY,
    serviceAccountName=STR,
    restartPolicy=enum("Always", "OnFailure", "Never"),
    imagePullSecrets=ANY,
    terminationGracePeriodSeconds=INT,
)
POD_TEMPLATE = obj(("spec",), metadata=TEMPLATE_META, spec=POD_SPEC)

# KubeRay: RayClusterSpec, HeadGroupSpec, WorkerGroupSpec, AutoscalerOptions.
RAY_START_PARAMS = map_of(STR)  # map[string]string: `num-cpus: 0` (an int) is rejected
AUTOSCALER_OPTIONS = obj(
    resources=RESOURCES,
    image=STR,
    imagePullPolicy=PULL_POLICY,
    env=list_of(ENV_VAR),
    envFrom=list_of(ENV_FROM),
    volumeMounts=list_of(VOLUME_MOUNT),
    securityContext=ANY,
    idleTimeoutSeconds=INT,
    upscalingMode=enum("Default", "Aggressive", "Conservative"),
    version=enum("v1", "v2"),
)
HEAD_GROUP = obj(
    ("template",),
    serviceType=enum("ClusterIP", "NodePort", "LoadBalancer"),
    headService=ANY,
    enableIngress=BOOL,
    rayStartParams=RAY_START_PARAMS,
    template=POD_TEMPLATE,
)
WORKER_GROUP = obj(
    ("groupName", "template"),
    groupName=STR,
    replicas=INT,
    minReplicas=INT,
    maxReplicas=INT,
    idleTimeoutSeconds=INT,
    numOfHosts=INT,
    rayStartParams=RAY_START_PARAMS,
    template=POD_TEMPLATE,
    scaleStrategy=obj(workersToDelete=list_of(STR)),
    suspend=BOOL,
)
RAY_CLUSTER_SPEC = obj(
    ("headGroupSpec",),
    headGroupSpec=HEAD_GROUP,
    workerGroupSpecs=list_of(WORKER_GROUP),
    rayVersion=STR,
    enableInTreeAutoscaling=BOOL,
    autoscalerOptions=AUTOSCALER_OPTIONS,
    headServiceAnnotations=map_of(STR),
    suspend=BOOL,
    managedBy=STR,
    gcsFaultToleranceOptions=ANY,
    authOptions=obj(
        mode=enum("disabled", "token"), secretName=STR, enableK8sTokenAuth=BOOL
    ),  # KubeRay >= 1.5.1 (secretName 1.6, enableK8sTokenAuth 1.7)
)
# KubeRay: RayJobSpec.
RAY_JOB_SPEC = obj(
    activeDeadlineSeconds=INT,
    backoffLimit=INT,
    rayClusterSpec=RAY_CLUSTER_SPEC,
    submitterPodTemplate=POD_TEMPLATE,
    metadata=map_of(STR),
    clusterSelector=map_of(STR),
    submitterConfig=obj(backoffLimit=INT),
    managedBy=STR,
    deletionStrategy=ANY,
    entrypoint=STR,
    runtimeEnvYAML=STR,
    jobId=STR,
    submissionMode=enum("K8sJobMode", "HTTPMode", "InteractiveMode", "SidecarMode"),
    entrypointResources=STR,
    entrypointNumCpus=NUM,
    entrypointNumGpus=NUM,
    ttlSecondsAfterFinished=INT,
    shutdownAfterJobFinishes=BOOL,
    suspend=BOOL,
)
# KubeRay: RayServiceSpec (serveConfigV2 is a YAML document inside a string).
RAY_SERVICE_SPEC = obj(
    ("rayClusterConfig",),
    serveConfigV2=STR,
    rayClusterConfig=RAY_CLUSTER_SPEC,
    upgradeStrategy=obj(type=enum("NewCluster", "None"), clusterUpgradeOptions=ANY),
    serveService=ANY,
    excludeHeadPodFromServeSvc=BOOL,
    rayClusterDeletionDelaySeconds=INT,
)
LABEL_SELECTOR = obj(matchLabels=map_of(STR))
# networking.k8s.io/v1 NetworkPolicy (the selectors of the peers: matchLabels only, so that
# network_policy_allows() below evaluates exactly what the manifest says).
NP_PEER = obj(
    podSelector=LABEL_SELECTOR,
    namespaceSelector=LABEL_SELECTOR,
    ipBlock=obj(("cidr",), cidr=STR, **{"except": list_of(STR)}),
)
NP_PORT = obj(("port",), protocol=enum("TCP", "UDP", "SCTP"), port=INT, endPort=INT)
NETWORK_POLICY_SPEC = obj(
    ("podSelector",),
    podSelector=LABEL_SELECTOR,
    policyTypes=list_of(enum("Ingress", "Egress")),
    ingress=list_of(obj((), ports=list_of(NP_PORT), **{"from": list_of(NP_PEER)})),
    egress=ANY,
)
KINDS: dict[tuple[str, str], Spec] = {
    ("ray.io/v1", "RayCluster"): RAY_CLUSTER_SPEC,
    ("ray.io/v1", "RayJob"): RAY_JOB_SPEC,
    ("ray.io/v1", "RayService"): RAY_SERVICE_SPEC,
    ("v1", "PersistentVolumeClaim"): obj(
        ("accessModes", "resources"),
        accessModes=list_of(enum("ReadWriteOnce", "ReadWriteMany", "ReadOnlyMany")),
        storageClassName=STR,
        resources=obj(requests=obj(storage=QUANTITY)),
    ),
    ("v1", "Service"): obj(
        ("ports",),
        selector=map_of(STR),
        type=enum("ClusterIP", "NodePort", "LoadBalancer"),
        ports=list_of(obj(("port",), name=STR, port=INT, targetPort=Spec("quantity"))),
    ),
    ("apps/v1", "Deployment"): obj(
        ("selector", "template"), replicas=INT, selector=LABEL_SELECTOR, template=POD_TEMPLATE
    ),
    ("apps/v1", "StatefulSet"): obj(
        ("selector", "template", "serviceName"),
        serviceName=STR,
        replicas=INT,
        selector=LABEL_SELECTOR,
        template=POD_TEMPLATE,
        volumeClaimTemplates=list_of(
            obj(
                metadata=OBJECT_META,
                spec=obj(
                    accessModes=list_of(STR),
                    storageClassName=STR,
                    resources=obj(requests=obj(storage=QUANTITY)),
                ),
            )
        ),
    ),
    ("networking.k8s.io/v1", "NetworkPolicy"): NETWORK_POLICY_SPEC,
    ("batch/v1", "Job"): obj(
        ("template",),
        backoffLimit=INT,
        ttlSecondsAfterFinished=INT,
        activeDeadlineSeconds=INT,
        template=POD_TEMPLATE,
    ),
}


def validate_manifest(doc: Any) -> list[str]:
    """Schema errors of one Kubernetes object (apiVersion/kind, metadata, spec)."""
    if not isinstance(doc, dict):
        return [f"document is not a mapping: {doc!r}"]
    key = (doc.get("apiVersion"), doc.get("kind"))
    meta = doc.get("metadata")
    naming: list[str] = []
    if isinstance(meta, dict):
        named = [k for k in ("name", "generateName") if k in meta]
        if len(named) != 1:
            naming.append(f"metadata: needs exactly one of name, generateName (has {named})")
        elif named == ["generateName"] and not str(meta["generateName"]).endswith("-"):
            naming.append("metadata.generateName: end it with '-' (a random suffix follows)")
    if doc.get("kind") == "Secret" and doc.get("apiVersion") == "v1":
        spec = obj(
            ("apiVersion", "kind", "metadata"),
            apiVersion=STR,
            kind=STR,
            metadata=OBJECT_META,
            type=STR,
            data=map_of(STR),
            stringData=map_of(STR),
        )
        return naming + validate(doc, spec)
    if key not in KINDS:
        return [f"unknown apiVersion/kind {key}"]
    top = obj(
        ("apiVersion", "kind", "metadata", "spec"),
        apiVersion=STR,
        kind=STR,
        metadata=OBJECT_META,
        spec=KINDS[key],
    )
    return naming + validate(doc, top)


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
    job["spec"]["submissionMode"] = "K8sMode"
    job["spec"]["entryPoint"] = job["spec"].pop("entrypoint")
    errors = validate_manifest(job)
    assert any("spec.submissionMode" in e for e in errors)
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


def test_mlflow_server_uses_postgres_and_an_object_store() -> None:
    ((_, deployment),) = docs_of("Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    args = dict(a.removeprefix("--").partition("=")[::2] for a in container["args"])
    assert args["backend-store-uri"].startswith("postgresql://")
    assert "@mlflow-postgres:5432/" in args["backend-store-uri"]
    assert "serve-artifacts" in args  # workers upload through the server, no bucket keys
    # Kubernetes expands $(VAR) in args only from the container's env: each one is defined,
    # from a required Secret key that the README creates.
    env_refs = {e["name"]: e.get("valueFrom", {}).get("secretKeyRef") for e in container["env"]}
    created = readme_secrets()
    for var in re.findall(r"\$\((\w+)\)", " ".join(container["args"])):
        ref = env_refs[var]
        assert ref is not None and not ref.get("optional"), var
        assert ref["key"] in created[ref["name"]], (var, ref)
    destination = env_refs[args["artifacts-destination"].removeprefix("$(").removesuffix(")")]
    assert destination is not None
    assert re.search(
        rf"--from-literal={destination['key']}=\"?s3://", README.read_text(encoding="utf-8")
    ), "the README's mlflow-s3 Secret sets an s3:// artifacts destination"
    assert args["host"] == "0.0.0.0" and args["port"] == "5000"
    service = next(d for _, d in docs_of("Service") if d["metadata"]["name"] == "mlflow")
    assert service["spec"]["ports"][0]["port"] == 5000
    assert f"http://{service['metadata']['name']}:5000" == MLFLOW_URI
    # MLflow 3 rejects unknown Host headers: the Service name must be allowed.
    env = {e["name"]: e.get("value", "") for e in container["env"]}
    assert "mlflow:*" in env["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")
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
        for container in doc["spec"]["template"]["spec"]["containers"]:
            for source in container.get("envFrom", []):
                ref = source["secretRef"]
                refs.append((ref["name"], None, ref.get("optional", False)))
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    refs.append((ref["name"], ref["key"], ref.get("optional", False)))
    assert {name for name, _, _ in refs} == {"mlflow-postgres", "mlflow-s3"}
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
    (policy,) = [copy.deepcopy(d) for _, d in docs_of("NetworkPolicy")]
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
    assert f"mlflow=={MLFLOW_VERSION}" in runs
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
    """Ray's own cluster-launcher validation (its JSON schema, after filling defaults)."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


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
