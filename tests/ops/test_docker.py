"""The Docker files: compose structure (services, GPU reservation, volumes, unique names)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker" / "docker-compose.yml"
DOCKERFILE = ROOT / "docker" / "Dockerfile"


def load_compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def substitute(text: str, env: dict[str, str]) -> str:
    """Compose-style ``${VAR:-default}`` substitution, enough to check interpolation."""
    return re.sub(
        r"\$\{(\w+)(?::-([^}]*))?\}", lambda m: env.get(m.group(1), m.group(2) or ""), text
    )


def test_compose_has_trainer_and_tensorboard():
    services = load_compose()["services"]
    assert {"trainer", "tensorboard"} <= set(services)
    trainer = services["trainer"]
    assert trainer["build"]["dockerfile"] == "docker/Dockerfile"
    assert (ROOT / trainer["build"]["context"].replace("..", ".")).exists()


def test_trainer_reserves_the_chosen_gpu():
    trainer = load_compose()["services"]["trainer"]
    devices = trainer["deploy"]["resources"]["reservations"]["devices"]
    assert len(devices) == 1
    assert devices[0]["capabilities"] == ["gpu"]
    assert devices[0]["device_ids"] == ["${CUDA_DEVICES:-0}"]
    assert substitute(devices[0]["device_ids"][0], {"CUDA_DEVICES": "1"}) == "1"
    assert substitute(devices[0]["device_ids"][0], {}) == "0"


def test_container_names_are_unique_per_run_and_gpu():
    trainer = load_compose()["services"]["trainer"]
    name = trainer["container_name"]
    a = substitute(name, {"RUN_NAME": "sar", "CUDA_DEVICES": "0"})
    b = substitute(name, {"RUN_NAME": "infra", "CUDA_DEVICES": "1"})
    assert a != b and a == "detlab-sar-gpu0"


def test_volumes_for_data_and_output():
    services = load_compose()["services"]
    mounts = [substitute(v, {}).split(":") for v in services["trainer"]["volumes"]]
    assert {m[1] for m in mounts} >= {"/data", "/output"}
    assert {m[0] for m in mounts} == {"./data", "./output"}
    tb = services["tensorboard"]
    tb_mounts = [substitute(v, {}).split(":") for v in tb["volumes"]]
    assert ["./output", "/output", "ro"] in tb_mounts
    assert tb["ports"] == ["${TB_PORT:-6006}:6006"]
    assert substitute(tb["ports"][0], {"TB_PORT": "7007"}) == "7007:6006"


def test_dockerfile_installs_detlab_on_cuda_base():
    text = DOCKERFILE.read_text()
    assert re.search(r"ARG BASE_IMAGE=pytorch/pytorch:[\w.\-]+cuda", text)
    assert "pip install -e" in text
    for path in re.findall(r"^COPY (\S+) ", text, flags=re.M):
        assert (ROOT / path).exists(), f"Dockerfile copies missing path {path}"


def test_postgres_service_and_sweep_worker_for_a_shared_study():
    services = load_compose()["services"]
    pg = services["postgres"]
    assert pg["image"].startswith("postgres:")
    env = dict(e.split("=", 1) for e in pg["environment"])
    assert env["POSTGRES_PASSWORD"].startswith("${DETLAB_DB_PASSWORD:?")  # required, not stored
    assert "pg_isready" in " ".join(pg["healthcheck"]["test"])
    assert pg["volumes"][0].split(":")[0] in load_compose()["volumes"]
    worker = services["sweep-worker"]
    assert worker["entrypoint"] == ["tools/sweep.sh"]
    assert worker["depends_on"]["postgres"]["condition"] == "service_healthy"
    command = worker["command"]
    url = command[command.index("--storage") + 1]
    # Compose turns $$ into $: the container gets ${DETLAB_DB_PASSWORD}, expanded by the sweep.
    assert url == "postgresql+psycopg://detlab:$${DETLAB_DB_PASSWORD}@postgres:5432/detlab"
    spec = substitute(command[0], {})
    assert (ROOT / spec).is_file()
    assert worker["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    assert "sweep" in DOCKERFILE.read_text() and "psycopg[binary]" in DOCKERFILE.read_text()


def test_sweep_expands_the_password_from_the_environment(monkeypatch):
    from detlab.sweep.study import resolve_storage

    url = load_compose()["services"]["sweep-worker"]["command"]
    url = url[url.index("--storage") + 1].replace("$$", "$")  # what the container receives
    monkeypatch.setenv("DETLAB_DB_PASSWORD", "pw")
    ref = resolve_storage(url, "/output/sweep")
    assert ref.target == "postgresql+psycopg://detlab:pw@postgres:5432/detlab"
    assert "pw@" not in ref.shown
