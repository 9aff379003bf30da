"""docker/compose.yaml: the structure of the distributed deployment, checked without Docker.

No Docker engine runs on these machines, so CI reads the compose file as data: the services
of Airflow's official layout are there, they run the CeleryExecutor against PostgreSQL and
Redis, start in the right order, have health checks, share the run-data volume, and only
the api-server and the mailbox simulator are published — on 127.0.0.1.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO

DOCKER = REPO / "docker"
COMPOSE = DOCKER / "compose.yaml"
ENV_EXAMPLE = DOCKER / ".env.example"

AIRFLOW_SERVICES = {
    "airflow-apiserver": "api-server",
    "airflow-scheduler": "scheduler",
    "airflow-dag-processor": "dag-processor",
    "airflow-triggerer": "triggerer",
    "airflow-worker": "celery worker",
}
LONG_RUNNING = set(AIRFLOW_SERVICES) | {"bevis-mailbox", "postgres", "redis"}
DATA_DIR = "/opt/bevis/data"
VAR = re.compile(r"\$\{(?P<name>[A-Z0-9_]+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"]


def env_example() -> dict[str, str]:
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default}, ${VAR:?error} with the values of .env.example."""

    def one(match: re.Match[str]) -> str:
        name, op, arg = match["name"], match["op"], match["arg"]
        if env.get(name):
            return env[name]
        if op in (":-", "-"):
            return arg
        raise AssertionError(f"${{{name}}} has no value in .env.example and no default")

    return VAR.sub(one, value.replace("$$", "\0")).replace("\0", "$")


def test_the_official_layout_plus_the_simulator(services: dict[str, Any]) -> None:
    expected = set(AIRFLOW_SERVICES) | {
        "airflow-init",
        "airflow-cli",
        "postgres",
        "redis",
        "bevis-mailbox",
    }
    assert set(services) == expected
    for name, command in AIRFLOW_SERVICES.items():
        assert services[name]["command"] == command, name


def test_every_airflow_service_runs_the_celery_executor_on_postgres_and_redis(
    services: dict[str, Any],
) -> None:
    for name in [*AIRFLOW_SERVICES, "airflow-init"]:
        env = services[name]["environment"]
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg://")
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].endswith("@postgres/airflow")
        assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://")
        assert "@redis:6379" in env["AIRFLOW__CELERY__BROKER_URL"]
        assert env["AIRFLOW__CELERY__RESULT_BACKEND"].startswith("db+postgresql+psycopg://")
        assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "false"
        # Workers reach the Execution API of the api-server service, on its container port.
        assert (
            env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"]
            == "http://airflow-apiserver:8080/execution/"
        )
        assert "AIRFLOW__API_AUTH__JWT_SECRET" in env, "components must share the JWT secret"
        assert services[name]["image"] == "${BEVIS_IMAGE:-bevis-airflow:latest}"
        assert services[name]["build"]["dockerfile"] == "docker/Dockerfile"


def test_urls_parse_and_their_drivers_are_installed(services: dict[str, Any]) -> None:
    from sqlalchemy.engine import make_url

    values = env_example()
    env = services["airflow-worker"]["environment"]
    for key in (
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC",
        "BEVIS_SOURCE_URL",
        "BEVIS_LEDGER_URL",
    ):
        url = make_url(interpolate(env[key], values))
        assert url.host == "postgres", key
        url.get_dialect().import_dbapi()  # psycopg: the one driver in the lock
    backend = make_url(interpolate(env["AIRFLOW__CELERY__RESULT_BACKEND"], values)[3:])
    backend.get_dialect().import_dbapi()


def test_start_order_and_health_checks(services: dict[str, Any]) -> None:
    for name in LONG_RUNNING:
        check = services[name].get("healthcheck")
        assert check and check["test"], f"{name} has no healthcheck"
    for name in [*AIRFLOW_SERVICES, "airflow-init"]:
        deps = services[name]["depends_on"]
        assert deps["postgres"]["condition"] == "service_healthy", name
        assert deps["redis"]["condition"] == "service_healthy", name
    for name in AIRFLOW_SERVICES:
        deps = services[name]["depends_on"]
        assert deps["airflow-init"]["condition"] == "service_completed_successfully", name
    worker = services["airflow-worker"]["depends_on"]
    assert worker["airflow-apiserver"]["condition"] == "service_healthy"
    assert worker["bevis-mailbox"]["condition"] == "service_healthy"
    # The scheduler's health check needs its health server switched on.
    assert "8974/health" in " ".join(services["airflow-scheduler"]["healthcheck"]["test"])
    env = services["airflow-scheduler"]["environment"]
    assert env["AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK"] == "true"


def test_worker_health_check_names_the_celery_app_that_exists(services: dict[str, Any]) -> None:
    import importlib.util

    test = " ".join(services["airflow-worker"]["healthcheck"]["test"])
    app = re.search(r"--app (\S+)", test)
    assert app, test
    module = app[1].rsplit(".", 1)[0]
    assert importlib.util.find_spec(module) is not None, module
    assert services["airflow-worker"]["environment"]["DUMB_INIT_SETSID"] == "0"


def test_run_data_volume_is_shared_by_every_airflow_service(
    compose: dict[str, Any], services: dict[str, Any]
) -> None:
    assert "bevis-data" in compose["volumes"]
    for name in [*AIRFLOW_SERVICES, "airflow-init"]:
        assert f"bevis-data:{DATA_DIR}" in services[name]["volumes"], name
        assert services[name]["environment"]["BEVIS_DATA_DIR"] == DATA_DIR, name
    # The ledger and the sources are shared through PostgreSQL, not SQLite files.
    env = services["airflow-worker"]["environment"]
    assert env["BEVIS_LEDGER_URL"].startswith("postgresql+psycopg://")
    assert env["BEVIS_SOURCE_URL"].startswith("postgresql+psycopg://")
    assert services["postgres"]["volumes"][1].endswith("/docker-entrypoint-initdb.d/10-bevis.sh:ro")


def test_mailbox_simulator_from_the_same_image(services: dict[str, Any]) -> None:
    sim = services["bevis-mailbox"]
    assert sim["image"] == services["airflow-worker"]["image"]
    assert sim["build"] == services["airflow-worker"]["build"]
    assert sim["entrypoint"][-1] == "bevis"
    command = sim["command"]
    assert command[:2] == ["simulator", "mailbox"]
    assert command[command.index("--port") + 1] == "8787"
    assert command[command.index("--host") + 1] == "0.0.0.0"  # reachable from the workers
    url = services["airflow-worker"]["environment"]["BEVIS_MAILBOX_URL"]
    assert url == "http://bevis-mailbox:8787"


def test_simulator_command_line_is_accepted_by_the_real_cli(services: dict[str, Any]) -> None:
    command = services["bevis-mailbox"]["command"]
    bevis = str(Path(sys.executable).with_name("bevis"))
    result = subprocess.run(
        [bevis, *command[:2], "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for option in (arg for arg in command if arg.startswith("--")):
        assert option in result.stdout, f"bevis {' '.join(command[:2])} has no {option}"


def test_only_api_server_and_simulator_are_published_on_loopback(
    services: dict[str, Any],
) -> None:
    published = {name for name, svc in services.items() if svc.get("ports")}
    assert published == {"airflow-apiserver", "bevis-mailbox"}
    values = env_example()
    for name in published:
        for port in services[name]["ports"]:
            assert interpolate(str(port), values).startswith("127.0.0.1:"), (name, port)
    assert services["redis"].get("ports") is None and services["postgres"].get("ports") is None


def test_every_required_variable_is_in_the_env_example() -> None:
    values = env_example()
    text = COMPOSE.read_text()
    for match in VAR.finditer(text):
        if match["op"] in (":?", "?"):
            assert match["name"] in values, f"{match['name']} missing from docker/.env.example"
    # and the whole file interpolates with the example values
    interpolate(text, values)


def test_init_runs_the_bevis_init_script_after_the_airflow_migration(
    services: dict[str, Any],
) -> None:
    init = services["airflow-init"]
    assert init["environment"]["_AIRFLOW_DB_MIGRATE"] == "true"
    assert init["command"] == ["bash", "/usr/local/bin/bevis-init"]
    assert init["restart"] == "no"
    dockerfile = (DOCKER / "Dockerfile").read_text()
    assert "docker/bevis-init.sh /usr/local/bin/bevis-init" in dockerfile


def test_celery_config_module_is_shipped_and_extends_airflows_defaults(
    services: dict[str, Any],
) -> None:
    import importlib.util

    from airflow.providers.celery.executors.default_celery import DEFAULT_CELERY_CONFIG

    option = services["airflow-worker"]["environment"]["AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS"]
    module_name, _, attr = option.rpartition(".")
    source = DOCKER / f"{module_name}.py"
    assert f"docker/{source.name} /opt/airflow/config/{source.name}" in (
        (DOCKER / "Dockerfile").read_text()
    )
    spec = importlib.util.spec_from_file_location(module_name, source)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = getattr(module, attr)
    assert {k: config[k] for k in DEFAULT_CELERY_CONFIG} == DEFAULT_CELERY_CONFIG
