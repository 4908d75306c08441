"""Offline checks of the cluster configurations under clusters/ (no cloud credentials, no Kubernetes).

VM cluster YAMLs go through the installed Ray's autoscaler schema and its own config preparation; KubeRay
manifests (no PyPI package ships their CRD schemas) are checked for structure; all files for the project's
pinned versions, for paths that exist in the repository, and for the security defaults (loopback-only servers,
Ray token authentication on).
"""

from __future__ import annotations

import copy
import json
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CLUSTERS = REPO / "clusters"
VM_CONFIGS = ["aws-gpu.yaml", "gcp-gpu.yaml", "onprem.yaml"]
KUBERAY_CLUSTER = CLUSTERS / "kuberay" / "raycluster.yaml"
KUBERAY_JOB = CLUSTERS / "kuberay" / "rayjob.yaml"
KUBERAY_RUNTIME_ENV = CLUSTERS / "kuberay" / "runtime-env.yaml"
ENTRYPOINT = "python tune/search.py --config gpu-cluster"
PINS = {"torch": "2.13.0", "optuna": "5.0.0", "mlflow": "3.17.2"}
RAY_VERSION = "2.60.0"


def _load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict), f"{path} is not a YAML mapping"
    return data


def _all_yaml_files() -> list[Path]:
    return sorted(CLUSTERS.rglob("*.yaml"))


def _commands(cfg: dict[str, Any], *keys: str) -> str:
    return "\n".join(cmd for key in keys for cmd in cfg.get(key, []))


def _runtime_env(job: dict[str, Any]) -> dict[str, Any]:
    env = yaml.safe_load(job["spec"]["runtimeEnvYAML"])
    assert isinstance(env, dict)
    return env


def _containers(pod_template: dict[str, Any]) -> list[dict[str, Any]]:
    return list(pod_template["spec"]["containers"])


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {item["name"]: item.get("value", item.get("valueFrom")) for item in container.get("env", [])}


def test_cluster_folder_has_every_config() -> None:
    names = {p.relative_to(CLUSTERS).as_posix() for p in _all_yaml_files()}
    assert set(VM_CONFIGS) | {"kuberay/raycluster.yaml", "kuberay/rayjob.yaml"} <= names
    assert (CLUSTERS / "README.md").is_file()


# ---------------------------------------------------------------- VM clusters (ray up) ----------------------
@pytest.mark.parametrize("name", VM_CONFIGS)
def test_vm_config_matches_ray_schema(name: str) -> None:
    import jsonschema
    import ray.autoscaler

    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(_load(CLUSTERS / name), schema)


@pytest.mark.parametrize("name", VM_CONFIGS)
def test_vm_config_passes_ray_prepare_and_validate(name: str) -> None:
    # prepare_config only merges the provider's defaults.yaml (and, for "local", the on-prem node type); the
    # credential-needing part of `ray up` is the provider's bootstrap_config, which is not called here.
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(_load(CLUSTERS / name)))
    validate_config(prepared)
    for node_type in prepared["available_node_types"].values():
        assert node_type["min_workers"] <= node_type["max_workers"]


@pytest.mark.parametrize("name", ["aws-gpu.yaml", "gcp-gpu.yaml"])
def test_cloud_head_takes_no_work_and_workers_have_gpus(name: str) -> None:
    cfg = _load(CLUSTERS / name)
    types = cfg["available_node_types"]
    head = types[cfg["head_node_type"]]
    assert head["resources"].get("CPU") == 0 and head["resources"].get("GPU", 0) == 0
    workers = {k: v for k, v in types.items() if k != cfg["head_node_type"]}
    for worker in workers.values():
        assert worker["resources"]["CPU"] >= 1
        assert 0 <= worker["min_workers"] <= worker["max_workers"] <= cfg["max_workers"]
    assert any(w["resources"].get("GPU", 0) == 0 for w in workers.values()), "no CPU type for trial drivers"
    workers = {k: v for k, v in workers.items() if v["resources"].get("GPU", 0) >= 1}
    assert len(workers) >= 2, "expected spot and on-demand GPU worker types"
    # node_config is free-form in Ray's schema (the cloud API checks it at launch): check the keys we rely on
    machine_key = {"aws": "InstanceType", "gcp": "machineType"}[cfg["provider"]["type"]]
    for node_type in types.values():
        assert machine_key in node_type["node_config"]
    if cfg["provider"]["type"] == "gcp":
        for worker in workers.values():
            assert worker["node_config"]["guestAccelerators"][0]["acceleratorCount"] == worker["resources"]["GPU"]
    spot_markers = [json.dumps(w["node_config"]) for w in workers.values()]
    assert any('"spot"' in m.lower() for m in spot_markers), "no spot worker type"
    assert any('"spot"' not in m.lower() for m in spot_markers), "no on-demand worker type"
    assert cfg["docker"]["head_image"] == f"rayproject/ray:{RAY_VERSION}-py311-cpu"
    assert cfg["docker"]["worker_image"] == f"rayproject/ray:{RAY_VERSION}-py311-gpu"


@pytest.mark.parametrize("name", VM_CONFIGS)
def test_vm_config_pins_installs_and_secures(name: str) -> None:
    cfg = _load(CLUSTERS / name)
    setup = _commands(cfg, "setup_commands")
    for package, version in PINS.items():
        assert f"{package}=={version}" in setup
    assert f"ray[default,tune,train]=={RAY_VERSION}" in setup
    assert re.search(r"pip install( --quiet)? -e ~/painvrl", setup)
    assert cfg["file_mounts"]["~/painvrl"] == "."
    assert cfg["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
    assert ".gitignore" in cfg["rsync_filter"], "the synced repo must skip .venv and build outputs"
    assert "PAINVRL_STORAGE_PATH=" in setup

    head_start = _commands(cfg, "head_start_ray_commands")
    worker_start = _commands(cfg, "worker_start_ray_commands")
    assert "--dashboard-host=127.0.0.1" in head_start
    assert "--num-cpus=0" in head_start
    for start in (head_start, worker_start):
        assert "RAY_AUTH_MODE=token ray start" in start
    assert "MLFLOW_TRACKING_URI=http://127.0.0.1:5000" in _commands(cfg, "head_setup_commands")
    assert "MLFLOW_TRACKING_URI" not in setup + worker_start, "workers cannot reach the head's loopback"


def test_onprem_placeholders_are_marked() -> None:
    cfg = _load(CLUSTERS / "onprem.yaml")
    assert cfg["provider"]["type"] == "local"
    assert cfg["provider"]["head_ip"] == "<HEAD_IP>"
    assert cfg["provider"]["worker_ips"] and all(
        re.fullmatch(r"<WORKER_IP_\d+>", ip) for ip in cfg["provider"]["worker_ips"]
    )


# ---------------------------------------------------------------- MLflow server -----------------------------
def _mlflow_server_commands() -> list[tuple[Path, list[str]]]:
    found = []
    for path in _all_yaml_files():
        text = re.sub(r"#.*", "", path.read_text())
        for match in re.finditer(r"mlflow server(.*?)(?:--workers \d+)", text, flags=re.S):
            found.append((path, shlex.split(match.group(0).replace(">", " "))))
    return found


def test_every_cluster_starts_mlflow_on_loopback() -> None:
    commands = _mlflow_server_commands()
    files = {path.name for path, _ in commands}
    assert set(VM_CONFIGS) | {"raycluster.yaml", "rayjob.yaml"} <= files
    for path, argv in commands:
        assert argv[argv.index("--host") + 1] == "127.0.0.1", path
        assert argv[argv.index("--port") + 1] == "5000", path
        assert argv[argv.index("--workers") + 1] == "1", path
        assert argv[argv.index("--backend-store-uri") + 1].startswith("sqlite:///"), path
        assert "--default-artifact-root" in argv, path


# ---------------------------------------------------------------- KubeRay -----------------------------------
def _check_ray_cluster_spec(spec: dict[str, Any], where: str) -> None:
    assert spec["rayVersion"] == RAY_VERSION, where
    assert spec["enableInTreeAutoscaling"] is True, where
    head = spec["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0", where
    head_containers = {c["name"]: c for c in _containers(head["template"])}
    ray_head = head_containers["ray-head"]
    assert ray_head["image"] == f"rayproject/ray:{RAY_VERSION}-py311-cpu", where
    head_env = _env(ray_head)
    assert head_env["RAY_AUTH_MODE"] == "token", where
    assert head_env["RAY_AUTH_TOKEN"]["secretKeyRef"]["name"] == "painvrl-ray-auth", where
    assert head_env["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:5000", where
    assert head_env["PAINVRL_STORAGE_PATH"].startswith("/mnt/shared/"), where
    assert "mlflow" in head_containers, f"{where}: MLflow sidecar missing"
    assert _env(head_containers["mlflow"])["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false", where

    groups = spec["workerGroupSpecs"]
    assert groups, where
    for group in groups:
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], where
        worker = _containers(group["template"])[0]
        assert worker["image"] == f"rayproject/ray:{RAY_VERSION}-py311-gpu", where
        assert int(worker["resources"]["limits"]["nvidia.com/gpu"]) >= 1, where
        worker_env = _env(worker)
        assert worker_env["RAY_AUTH_MODE"] == "token", where
        assert "MLFLOW_TRACKING_URI" not in worker_env, f"{where}: workers cannot reach the head's loopback"
        assert worker_env["PAINVRL_STORAGE_PATH"] == head_env["PAINVRL_STORAGE_PATH"], where
    assert _env(spec["autoscalerOptions"])["RAY_AUTH_MODE"] == "token", where


def test_raycluster_structure() -> None:
    manifest = _load(KUBERAY_CLUSTER)
    assert manifest["apiVersion"] == "ray.io/v1"
    assert manifest["kind"] == "RayCluster"
    assert manifest["metadata"]["name"]
    _check_ray_cluster_spec(manifest["spec"], "raycluster.yaml")
    assert manifest["spec"]["headGroupSpec"]["rayStartParams"]["dashboard-host"] == "127.0.0.1"


def test_rayjob_structure_and_entrypoint() -> None:
    manifest = _load(KUBERAY_JOB)
    assert manifest["apiVersion"] == "ray.io/v1"
    assert manifest["kind"] == "RayJob"
    spec = manifest["spec"]
    assert spec["entrypoint"] == ENTRYPOINT
    assert spec["shutdownAfterJobFinishes"] is True
    _check_ray_cluster_spec(spec["rayClusterSpec"], "rayjob.yaml")
    # the job's cluster is the standalone cluster minus the loopback-only dashboard (see README)
    standalone = copy.deepcopy(_load(KUBERAY_CLUSTER)["spec"])
    del standalone["headGroupSpec"]["rayStartParams"]["dashboard-host"]
    assert spec["rayClusterSpec"] == standalone


def test_runtime_envs_parse_pin_and_agree() -> None:
    from ray.runtime_env import RuntimeEnv

    job_env = _runtime_env(_load(KUBERAY_JOB))
    file_env = _load(KUBERAY_RUNTIME_ENV)
    for env in (job_env, file_env):
        RuntimeEnv(**env)  # Ray's own validation of field names and shapes
    assert job_env["working_dir"].startswith("https://") and job_env["working_dir"].endswith(".zip")
    assert job_env["pip"] == file_env["pip"]
    packages = file_env["pip"]["packages"]
    for package, version in PINS.items():
        assert f"{package}=={version}" in packages
    # every runtime dependency of the project except ray (the image's) is installed
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    names = {re.split(r"[<>=\[ ;]", dep, maxsplit=1)[0].lower() for dep in pyproject["project"]["dependencies"]}
    installed = {re.split(r"[<>=\[ ;]", dep, maxsplit=1)[0].lower() for dep in packages}
    assert names - {"ray"} <= installed


# ---------------------------------------------------------------- paths and security ------------------------
_REPO_PATH = re.compile(r"(?<![\w/~.-])((?:tune|clusters|painvrl)/[\w./-]+\.(?:py|yaml|yml|md))")


def _named_repo_paths() -> set[str]:
    """Repo-relative files named anywhere in the cluster YAMLs (commands, entrypoints, comments) and README."""
    names: set[str] = set()
    for path in [*_all_yaml_files(), CLUSTERS / "README.md"]:
        names.update(_REPO_PATH.findall(path.read_text()))
    return names


def test_named_repo_paths_exist() -> None:
    names = _named_repo_paths()
    assert {"tune/search.py", "painvrl/study/configs/gpu-cluster.yaml", "clusters/kuberay/runtime-env.yaml"} <= names
    missing = sorted(name for name in names if not (REPO / name).is_file())
    assert not missing, f"cluster configs name files that do not exist: {missing}"


def test_the_entrypoint_names_a_shipped_study() -> None:
    from painvrl.study.shipped import is_shipped, resolve_study_config

    words = shlex.split(ENTRYPOINT)
    assert is_shipped(resolve_study_config(words[words.index("--config") + 1]))


def test_file_mount_sources_exist() -> None:
    for name in VM_CONFIGS:
        for source in _load(CLUSTERS / name)["file_mounts"].values():
            if not source.startswith("~"):  # ~/... is the operator's own machine (the auth token)
                assert (REPO / source).exists(), f"{name}: file_mounts source {source!r} missing"


def _auth_mode_values(node: Any) -> list[Any]:
    """Every value a parsed YAML gives RAY_AUTH_MODE: as a mapping key or as a Kubernetes env entry."""
    found: list[Any] = []
    if isinstance(node, dict):
        if node.get("name") == "RAY_AUTH_MODE":
            found.append(node.get("value", node.get("valueFrom")))
        for key, value in node.items():
            if key == "RAY_AUTH_MODE":
                found.append(value)
            found.extend(_auth_mode_values(value))
    elif isinstance(node, list):
        for item in node:
            found.extend(_auth_mode_values(item))
    return found


@pytest.mark.parametrize("path", _all_yaml_files(), ids=lambda p: p.relative_to(CLUSTERS).as_posix())
def test_no_wildcard_bind_and_auth_never_disabled(path: Path) -> None:
    text = path.read_text()
    assert "0.0.0.0" not in text
    assert not re.search(r"disable[-_]?auth", text, flags=re.I)
    # shell / env-var spellings in commands and comments: RAY_AUTH_MODE=x, RAY_AUTH_MODE: x
    shell_values = re.findall(r"RAY_AUTH_MODE\s*[=:]\s*[\"']?(\w+)", text)
    structured_values = _auth_mode_values(_load(path))
    assert all(value == "token" for value in shell_values + structured_values), (
        f"{path.name}: RAY_AUTH_MODE must stay 'token', found {shell_values + structured_values}"
    )
    if path != KUBERAY_RUNTIME_ENV:
        assert shell_values or structured_values, f"{path.name} never sets RAY_AUTH_MODE=token"
