"""deploy/kubernetes: each overlay renders (`kubectl kustomize`), passes the schemas of the pinned
Kubernetes version (`kubernetes-validate`, strict: no unknown field), and keeps the invariants that a
cluster would otherwise reveal only at run time. No cluster runs here: docs/deployment.md says what
these checks cover and what they do not."""

from __future__ import annotations

import re
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from aistack import __version__, services
from aistack.config import Settings
from support import REPO_ROOT, missing

# The Kubernetes release the manifests are checked against: what kubectl here speaks (1.32).
KUBERNETES_VERSION = "1.32.0"
KUBERNETES_DIR = REPO_ROOT / "deploy" / "kubernetes"
OVERLAYS = sorted(p.name for p in (KUBERNETES_DIR / "overlays").iterdir())
SECRET_LOOKING = re.compile(r"KEY|PASSWORD|SECRET|TOKEN|CREDENTIAL|DATABASE_URL", re.IGNORECASE)
WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet", "Job")

Obj = dict[str, Any]


def _fill(example: str) -> str:
    """secret.env as an operator writes it from the example: every variable given a value."""
    values = {"AISTACK_DATABASE_URL": "postgresql://aistack:s3cret@db.example.com:5432/aistack"}
    lines = []
    for line in example.splitlines():
        if re.fullmatch(r"[A-Z_]+=", line):
            name = line[:-1]
            line += values.get(name, secrets.token_hex(16))
        lines.append(line)
    return "\n".join(lines) + "\n"


def kubectl() -> str:
    """kubectl with kustomize v5 (components, labels): Debian's kubernetes-client (1.20) is too old."""
    path = shutil.which("kubectl")
    if path is None:
        missing("kubectl is not installed: the Kubernetes manifests cannot be rendered")
    version = subprocess.run([path, "version", "--client"], capture_output=True, text=True, timeout=60).stdout
    found = re.search(r"Kustomize Version: v(\d+)", version)
    if not found or int(found[1]) < 5:
        missing(f"kubectl {path} has no kustomize v5 (it says: {version.strip()!r})")
    return path


def render(overlay: str, tmp: Path) -> list[Obj]:
    """The objects `kubectl apply -k overlays/<overlay>` would send, from a copy holding a secret.env."""
    root = tmp / "kubernetes"
    shutil.copytree(KUBERNETES_DIR, root, ignore=shutil.ignore_patterns("secret.env"))
    overlay_dir = root / "overlays" / overlay
    (overlay_dir / "secret.env").write_text(_fill((overlay_dir / "secret.env.example").read_text()))
    out = subprocess.run([kubectl(), "kustomize", str(overlay_dir)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return [obj for obj in yaml.safe_load_all(out.stdout) if obj]


@pytest.fixture(scope="module", params=OVERLAYS)
def objects(request, tmp_path_factory) -> list[Obj]:
    return render(request.param, tmp_path_factory.mktemp(request.param))


def pod_specs(objects: list[Obj]) -> Iterator[tuple[Obj, Obj]]:
    """(workload, its pod template's spec) of every workload."""
    for obj in objects:
        if obj["kind"] in WORKLOADS:
            yield obj, obj["spec"]["template"]["spec"]


def containers(objects: list[Obj], init: bool = True) -> Iterator[tuple[str, Obj]]:
    """("Kind/name/container", container) of every container, init containers too unless told."""
    for workload, spec in pod_specs(objects):
        for c in spec["containers"] + (spec.get("initContainers", []) if init else []):
            yield f"{workload['kind']}/{workload['metadata']['name']}/{c['name']}", c


def named(objects: list[Obj], kind: str) -> dict[str, Obj]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def test_every_object_passes_the_pinned_kubernetes_schemas(objects):
    try:
        import kubernetes_validate
    except ImportError:
        missing("kubernetes-validate is not installed (pip install -e '.[test]')")
    invalid = []
    for obj in objects:
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:  # its text goes on with the whole schema
            invalid.append(f"{obj['kind']}/{obj['metadata']['name']}: {str(exc).splitlines()[0]}")
    assert not invalid, f"not valid for Kubernetes {KUBERNETES_VERSION}: {invalid}"


def test_every_container_is_probed_at_health(objects):
    """Readiness, liveness and (for the slow starters) a start-up probe on every container that
    serves; the stack's own at /health on a port the container declares. Init containers run to
    completion and take none."""
    for where, c in containers(objects, init=False):
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert probe in c, f"{where} has no {probe}"
            if c["image"].split("/")[-1].startswith("aistack-"):
                get = c[probe].get("httpGet")
                assert get and get["path"] == "/health", f"{where}'s {probe} is not GET /health"
                assert get["port"] in {p.get("name") for p in c["ports"]}, f"{where}'s {probe} names a port it lacks"


def test_images_are_pinned_and_the_stacks_carry_the_release(objects):
    for where, c in containers(objects):
        image = c["image"]
        name, _, tag = image.rpartition(":") if ":" in image.split("/")[-1] else (image, "", "")
        assert tag and tag != "latest", f"{where}: image {image} is not pinned to a tag"
        if name.split("/")[-1].startswith("aistack-") or "/aistack/" in name:
            assert tag == __version__, f"{where}: {image} is not the release {__version__}"


def test_no_secret_in_a_config_map_or_a_literal_env_value(objects):
    for name, cm in named(objects, "ConfigMap").items():
        leaked = [key for key in cm.get("data", {}) if SECRET_LOOKING.search(key)]
        assert not leaked, f"ConfigMap {name} holds {leaked}: secrets belong in a Secret"
    for where, c in containers(objects):
        for env in c.get("env", []):
            if SECRET_LOOKING.search(env["name"]) and "value" in env:
                # a URL may only be composed of secret references, never hold a password itself
                assert re.search(r":\$\([A-Z_]+\)@", env["value"]), f"{where}: {env['name']} is given in clear"


def test_every_service_selects_a_pod_and_its_port(objects):
    templates = [(w, w["spec"]["template"]) for w, _ in pod_specs(objects)]
    for name, svc in named(objects, "Service").items():
        selector = svc["spec"]["selector"]
        matches = [t for _, t in templates if selector.items() <= t["metadata"]["labels"].items()]
        assert matches, f"Service {name} selects no pod template ({selector})"
        ports = {p.get("name") for t in matches for c in t["spec"]["containers"] for p in c.get("ports", [])}
        for port in svc["spec"]["ports"]:
            assert port["targetPort"] in ports, f"Service {name}: no selected pod has a port named {port['targetPort']}"


def test_every_reference_names_an_object_and_key_that_exist(objects):
    data = {
        kind: {n: {**o.get("data", {}), **o.get("stringData", {})} for n, o in named(objects, kind).items()}
        for kind in ("Secret", "ConfigMap")
    }
    for where, c in containers(objects):
        for env in c.get("env", []):
            for ref, kind in (("secretKeyRef", "Secret"), ("configMapKeyRef", "ConfigMap")):
                if r := env.get("valueFrom", {}).get(ref):
                    assert r["name"] in data[kind], f"{where}: {env['name']} refers to a {kind} {r['name']} that is not there"
                    assert r["key"] in data[kind][r["name"]], f"{where}: {kind} {r['name']} has no key {r['key']}"
        for source in c.get("envFrom", []):
            for ref, kind in (("secretRef", "Secret"), ("configMapRef", "ConfigMap")):
                if ref in source:
                    assert source[ref]["name"] in data[kind], f"{where}: envFrom {kind} {source[ref]['name']} is not there"


def test_a_variable_is_used_only_after_it_is_defined(objects):
    """The kubelet fills in `$(NAME)` from variables defined earlier in the list; any other stays
    literal (a database URL with `$(POSTGRES_PASSWORD)` in it as text)."""
    for where, c in containers(objects):
        defined: set[str] = set()
        for env in c.get("env", []):
            for used in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", env.get("value", "")):
                assert used in defined, f"{where}: {env['name']} uses $({used}) before it is defined"
            defined.add(env["name"])


def test_non_root_locked_down_and_limited(objects):
    for workload, spec in pod_specs(objects):
        pod = spec.get("securityContext", {})
        assert pod.get("runAsNonRoot") is True and pod.get("runAsUser", 0) != 0, f"{workload['metadata']['name']} may run as root"
        assert spec.get("automountServiceAccountToken") is False, f"{workload['metadata']['name']} mounts an API token"
    for where, c in containers(objects):
        sc = c.get("securityContext", {})
        assert sc.get("allowPrivilegeEscalation") is False, f"{where} may escalate privileges"
        assert sc.get("capabilities", {}).get("drop") == ["ALL"], f"{where} keeps capabilities"
        assert sc.get("readOnlyRootFilesystem") is True, f"{where} may write its image"
        for bound in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(c.get("resources", {}).get(bound, {})), f"{where} has no cpu and memory {bound}"


def test_rolling_updates_never_go_below_the_replicas(objects):
    for name, deployment in named(objects, "Deployment").items():
        strategy = deployment["spec"]["strategy"]
        assert strategy["type"] == "RollingUpdate" and strategy["rollingUpdate"]["maxUnavailable"] == 0, name


def test_every_service_of_the_stack_runs_and_is_reached_by_its_default_host(objects):
    """From services.py: each service runs as `aistack serve NAME` on its default port, and every
    service that another calls is a Service of that name (its *_HOST default), except the
    aider-wrapper, the workers' sidecar, which they reach on the pod's loopback."""
    served = {}
    for where, c in containers(objects, init=False):
        if c.get("command", [])[:2] == ["aistack", "serve"]:
            served.setdefault(c["command"][2], []).append((where, c))
    assert set(served) == set(services.NAMES)
    defaults = Settings()
    for name, runs in served.items():
        for where, c in runs:
            assert defaults.port(name) in {p["containerPort"] for p in c["ports"]}, f"{where} does not listen on {name}'s port"
    called = {dep for s in services.SERVICES.values() for dep in s.depends_on}
    assert called - {"aider-wrapper"} <= set(named(objects, "Service")), "a called service has no Service of its name"


def test_workers_share_their_worktrees_with_their_own_wrapper(objects):
    deployment = named(objects, "Deployment")["ralph-worker"]
    spec = deployment["spec"]["template"]["spec"]
    by_name = {c["name"]: c for c in spec["containers"]}
    worker, wrapper = by_name["ralph-wiggum"], by_name["aider-wrapper"]
    assert worker["command"][-2:] == ["--role", "worker"]
    env = {e["name"]: e for e in worker["env"]}
    assert env["RALPH_WORKER_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["AIDER_WRAPPER_HOST"]["value"] == "127.0.0.1"
    (config,) = named(objects, "ConfigMap").values()
    data_dir = config["data"]["AISTACK_DATA_DIR"]
    mounts = [{m["mountPath"]: m["name"] for m in c["volumeMounts"]}.get(data_dir) for c in (worker, wrapper)]
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert mounts[0] and mounts[0] == mounts[1] and "emptyDir" in volumes[mounts[0]], "worker and wrapper do not share /data"


def test_the_model_is_fetched_onto_a_volume_and_the_schema_upgraded_first(objects):
    llama = named(objects, "StatefulSet")["llama-cpp"]
    init = llama["spec"]["template"]["spec"]["initContainers"]
    claims = {t["metadata"]["name"] for t in llama["spec"]["volumeClaimTemplates"]}
    assert [c["command"] for c in init] == [["aistack", "model"]]
    assert any(m["name"] in claims and m["mountPath"] == "/cache" for m in init[0]["volumeMounts"])
    for name in ("ralph-wiggum-api", "ralph-worker"):
        init = named(objects, "Deployment")[name]["spec"]["template"]["spec"]["initContainers"]
        assert [c["command"] for c in init] == [["aistack", "db", "upgrade"]], name


def test_the_database_is_in_the_cluster_or_named_by_the_secret(objects):
    in_cluster = "postgres" in named(objects, "StatefulSet")
    for where, c in containers(objects):
        env = {e["name"]: e for e in c.get("env", [])}
        if "AISTACK_DATABASE_URL" not in env:
            continue
        url = env["AISTACK_DATABASE_URL"]
        if in_cluster:
            assert url["value"].startswith("postgresql://") and "@postgres:5432/" in url["value"], where
        else:
            assert url["valueFrom"]["secretKeyRef"]["key"] == "AISTACK_DATABASE_URL", where
            assert "POSTGRES_PASSWORD" not in env, where


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_secret_ships_with_an_overlay(overlay):
    """The example leaves every value to the operator (an empty key stops the services), and git
    ignores the secret.env made of it."""
    example = (KUBERNETES_DIR / "overlays" / overlay / "secret.env.example").read_text()
    assigned = [line for line in example.splitlines() if line and not line.startswith("#")]
    assert assigned and all(re.fullmatch(r"[A-Z_]+=", line) for line in assigned), assigned
    ignored = subprocess.run(["git", "check-ignore", "-q", f"deploy/kubernetes/overlays/{overlay}/secret.env"], cwd=REPO_ROOT)
    assert ignored.returncode == 0, "secret.env is not ignored by git"
