"""The cluster configs that ship: Ray's own launcher schema, and a closed schema of the KubeRay
fields used, so a misspelt field fails here instead of being ignored by a cluster."""

from __future__ import annotations

import copy
import json
import shlex
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import ray.autoscaler
import yaml

from search.cli import build_parser

CLUSTER = Path(__file__).resolve().parents[2] / "cluster"
RAY_SCHEMA = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
KUBERAY_SCHEMA = json.loads((CLUSTER / "kuberay" / "schema.json").read_text())
LAUNCHER = ["aws.yaml", "gcp.yaml"]


def kuberay_docs() -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"{p.name}:{doc['kind']}", doc)
        for p in sorted((CLUSTER / "kuberay").glob("*.yaml"))
        for doc in yaml.safe_load_all(p.read_text())
    ]


def rename(doc: dict[str, Any], path: str, new: str) -> dict[str, Any]:
    """A copy with the key at dotted ``path`` (list indices as numbers) renamed to ``new``."""
    out = copy.deepcopy(doc)
    *parents, last = path.split(".")
    node: Any = out
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    node[new] = node.pop(last)
    return out


@pytest.mark.parametrize("name", LAUNCHER)
def test_launcher_configs_pass_rays_schema(name: str) -> None:
    config = yaml.safe_load((CLUSTER / name).read_text())
    jsonschema.validate(config, RAY_SCHEMA)
    head = config["available_node_types"][config["head_node_type"]]
    assert head["max_workers"] == 0
    start = " ".join(config["head_start_ray_commands"])
    assert (
        "--num-cpus=0" in start and "--dashboard-host=127.0.0.1" in start and "RAY_AUTH_MODE=token" in start
    )
    assert all("RAY_AUTH_MODE=token" in c for c in config["worker_start_ray_commands"])
    assert any("mount" in c and "/mnt/shared" in c for c in config["setup_commands"])  # shared storage
    assert any("chmod 600 ~/.ray/auth_token" in c for c in config["setup_commands"])


@pytest.mark.parametrize("name", LAUNCHER)
@pytest.mark.parametrize(
    "path", ["head_node_type", "available_node_types.gpu_worker.max_workers", "provider"]
)
def test_a_typo_in_a_launcher_config_fails(name: str, path: str) -> None:
    config = yaml.safe_load((CLUSTER / name).read_text())
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(rename(config, path, path.rsplit(".", 1)[-1] + "s"), RAY_SCHEMA)


@pytest.mark.parametrize(("name", "doc"), kuberay_docs())
def test_kuberay_manifests_pass_the_schema(name: str, doc: dict[str, Any]) -> None:
    jsonschema.validate(doc, KUBERAY_SCHEMA)
    if doc["kind"] == "PersistentVolumeClaim":
        assert doc["spec"]["accessModes"] == ["ReadWriteMany"]
        return
    spec = doc["spec"] if doc["kind"] == "RayCluster" else doc["spec"]["rayClusterSpec"]
    assert spec["authOptions"] == {"mode": "token"}
    assert spec["headGroupSpec"]["rayStartParams"] == {"num-cpus": "0", "dashboard-host": "127.0.0.1"}
    worker = spec["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == "1"
    if doc["kind"] == "RayJob":
        assert doc["spec"]["submissionMode"] == "SidecarMode"  # reaches the loopback dashboard
        env = yaml.safe_load(doc["spec"]["runtimeEnvYAML"])["env_vars"]
        assert env["RAY_JOB_STOP_SIGNAL"] == "SIGINT" and int(env["RAY_JOB_STOP_WAIT_TIME_S"]) >= 30
        args = shlex.split(doc["spec"]["entrypoint"])
        assert args[:3] == ["python", "-m", "search.cli"]
        parsed = build_parser().parse_args(args[3:])
        assert parsed.command == "search" and parsed.storage.startswith("/shared/")
        assert parsed.address == "auto"  # the job's cluster, not a new local Ray inside the job


TYPOS = {
    "RayCluster": [
        "spec.authOptions",
        "spec.headGroupSpec.rayStartParams",
        "spec.workerGroupSpecs.0.maxReplicas",
        "spec.workerGroupSpecs.0.template.spec.containers.0.resources",
    ],
    "RayJob": [
        "spec.submissionMode",
        "spec.runtimeEnvYAML",
        "spec.rayClusterSpec.headGroupSpec.template.spec.volumes",
    ],
    "PersistentVolumeClaim": ["spec.accessModes"],
}


@pytest.mark.parametrize(("name", "doc"), kuberay_docs())
def test_a_typo_in_a_kuberay_manifest_fails(name: str, doc: dict[str, Any]) -> None:
    for path in TYPOS[doc["kind"]]:
        typo = rename(doc, path, path.rsplit(".", 1)[-1].rstrip("s") + "_")
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(typo, KUBERAY_SCHEMA)
