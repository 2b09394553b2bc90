"""The deployment recipes (deploy/, docs/deploy.md), checked offline: no Docker engine or cluster is
needed. The Dockerfiles lint clean (hadolint), the Kubernetes manifests validate against the API's
schemas (kubernetes-validate, strict), compose.yaml has the shape the docs describe, and everything
the recipes name exists here: management commands and their options, `python -m` modules, the
settings they set, the URLs they probe, and every process `./blaze up` runs. The monitoring recipes
too: the Prometheus job scrapes the web Service once, with what Blaze asks of a scraper, and the
Grafana dashboard (deploy/grafana/blaze.json) names only metrics and labels Blaze exports."""

import importlib.util
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import kubernetes_validate.utils as kubernetes_validate
import pytest
import yaml
from django.core.management import CommandError, get_commands, load_command_class
from django.urls import Resolver404, resolve
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.process_collector import ProcessCollector

from alerts import metrics as alert_metrics
from telemetry import metrics

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DEPLOY = ROOT / "deploy"
DOCKERFILES = [DEPLOY / "Dockerfile", DEPLOY / "Dockerfile.cuda"]
K8S = DEPLOY / "k8s"
DASHBOARD = DEPLOY / "grafana" / "blaze.json"
# The oldest Kubernetes the manifests claim (docs/deploy.md) and the newest kubernetes-validate bundles.
KUBERNETES_VERSIONS = ("1.30", "1.37")

# Variables the recipes set that blaze_site/settings.py does not read, and who reads them instead.
# Where that is a file of this project, the test checks that the file still names the variable.
READ_ELSEWHERE = {
    "BLAZE_ADMIN_PASSWORD": "engines/management/commands/setup_demo.py",  # the first admin's password
    "HF_HUB_OFFLINE": "blaze",  # huggingface_hub: no hub at run time, as `./blaze up` sets it
    "TRANSFORMERS_OFFLINE": "blaze",
    "PYTHONUNBUFFERED": "Python: log lines leave at once",
    "PATH": "the shell: the image's virtual environment first",
    "OMP_NUM_THREADS": "torch: as many CPU threads as the pod has CPUs",
    "DEBIAN_FRONTEND": "apt-get, while the CUDA image is built",
}
READ_ELSEWHERE_PREFIXES = ("POSTGRES_",)  # the postgres image creates its database from them

SHELL_SEPARATORS = {"&&", "||", ";", "|"}


# Reading the recipes -------------------------------------------------------------------------------

def shell_commands(script):
    """argv lists of a shell line, split at &&, ||, ; and |, with leading NAME=value assignments
    taken off as a dict: [(env, argv)]."""
    commands, current = [], []
    for token in shlex.split(script) + [";"]:
        if token in SHELL_SEPARATORS:
            env = {}
            while current and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", current[0]):
                name, _, value = current.pop(0).partition("=")
                env[name] = value
            if current or env:
                commands.append((env, current))
            current = []
        else:
            current.append(token)
    return commands


def exec_commands(argv):
    """An exec-form command as the argv lists it runs (`sh -c "…"` is a shell line)."""
    if len(argv) == 3 and argv[0] in ("sh", "bash") and argv[1] == "-c":
        return shell_commands(argv[2])
    return [({}, list(argv))]


def dockerfile_instructions(path):
    """(INSTRUCTION, rest) of each instruction, continuation lines joined, comments dropped."""
    lines = [line for line in path.read_text().splitlines() if not line.lstrip().startswith("#")]
    for line in "\n".join(lines).replace("\\\n", " ").splitlines():
        if line.strip():
            instruction, _, rest = line.strip().partition(" ")
            yield instruction.upper(), rest.strip()


def dockerfile_commands(path):
    for instruction, rest in dockerfile_instructions(path):
        if instruction == "HEALTHCHECK":
            rest = rest.split(" CMD ", 1)[1]
            instruction = "CMD"
        if instruction in ("CMD", "ENTRYPOINT"):
            yield from exec_commands(json.loads(rest))
        elif instruction == "RUN":
            yield from shell_commands(rest)


def dockerfile_env(path):
    names = set()
    for instruction, rest in dockerfile_instructions(path):
        if instruction == "ENV":
            names |= {token.partition("=")[0] for token in shlex.split(rest)}
    return names | {name for env, _ in dockerfile_commands(path) for name in env}


def compose():
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def compose_commands(service):
    command = service.get("command")
    if isinstance(command, str):
        yield from shell_commands(command)
    elif command:
        yield from exec_commands(command)
    test = service.get("healthcheck", {}).get("test")
    if test and test[0] == "CMD":
        yield from exec_commands(test[1:])
    elif test and test[0] == "CMD-SHELL":
        yield from shell_commands(test[1].replace("$$", "$"))


def env_file_names(path):
    """Names an env file sets, commented-out suggestions (`# BLAZE_HTTPS=1`) included."""
    return set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", path.read_text(), re.MULTILINE))


def compose_env():
    names = set()
    for service in compose()["services"].values():
        environment = service.get("environment", {})
        names |= set(environment) if isinstance(environment, dict) else {e.partition("=")[0] for e in environment}
        env_files = service.get("env_file", [])
        for env_file in [env_files] if isinstance(env_files, str) else env_files:
            # compose.env holds the operator's secrets and is not in git: its example is.
            names |= env_file_names(DEPLOY / f"{env_file}.example")
    return names


def manifest_files():
    """The Kubernetes API's resources; kustomization.yaml is Kustomize's, checked on its own."""
    return sorted(path for path in K8S.glob("*.yaml") if path.name != "kustomization.yaml")


def resources():
    return [(path.name, doc) for path in manifest_files() for doc in yaml.safe_load_all(path.read_text()) if doc]


def workloads():
    """(resource, pod spec) of each Deployment and Job."""
    return [(doc, doc["spec"]["template"]["spec"]) for _, doc in resources() if doc["kind"] in ("Deployment", "Job")]


def k8s_containers():
    return [c for _, spec in workloads() for c in spec.get("initContainers", []) + spec["containers"]]


def k8s_commands(container):
    yield from exec_commands(container.get("command", []) + container.get("args", []))
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        if "exec" in container.get(probe, {}):
            yield from exec_commands(container[probe]["exec"]["command"])


def resource(kind, name):
    return next(doc for _, doc in resources() if (doc["kind"], doc["metadata"]["name"]) == (kind, name))


def k8s_env():
    """Variables the containers set, and the keys of the ConfigMaps and Secrets they take whole (envFrom)."""
    names = {var["name"] for c in k8s_containers() for var in c.get("env", [])}
    for container in k8s_containers():
        for source in container.get("envFrom", []):
            kind, ref = ("ConfigMap", source["configMapRef"]) if "configMapRef" in source else (
                "Secret", source["secretRef"])
            doc = resource(kind, ref["name"])
            names |= set(doc.get("data", {})) | set(doc.get("stringData", {}))
    return names


def recipe_commands():
    """(where, argv) of every command the recipes run."""
    for path in DOCKERFILES:
        yield from ((path.name, argv) for _, argv in dockerfile_commands(path))
    for name, service in compose()["services"].items():
        yield from ((f"compose {name}", argv) for _, argv in compose_commands(service))
    for container in k8s_containers():
        yield from ((f"k8s {container['name']}", argv) for _, argv in k8s_commands(container))


def probe_paths():
    """(where, URL path) of every health check and probe."""
    for where, argv in recipe_commands():
        if argv[:2] == ["python", "deploy/healthcheck.py"]:
            yield where, argv[2]
        if argv and argv[0] in ("wget", "curl"):
            yield where, re.sub(r"^https?://[^/]+", "", argv[-1])
    for container in k8s_containers():
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            if "httpGet" in container.get(probe, {}):
                yield f"k8s {container['name']}", container[probe]["httpGet"]["path"]


# What exists in the project ------------------------------------------------------------------------

def settings_names():
    """Every environment variable blaze_site/settings.py reads."""
    source = (ROOT / "blaze_site" / "settings.py").read_text()
    environ = r'os\.environ(?:\.get|\.setdefault)?[\(\[]\s*"([A-Z][A-Z0-9_]*)"'
    helpers = r'env_(?:bool|list)\(\s*"([A-Z][A-Z0-9_]*)"'
    return {a or b for a, b in re.findall(f"{environ}|{helpers}", source)}


def unknown_env(names):
    known = settings_names() | set(READ_ELSEWHERE)
    return sorted(name for name in names if name not in known and not name.startswith(READ_ELSEWHERE_PREFIXES))


def module_exists(name):
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


def daphne_arguments_problem(args):
    code = ("import sys; from daphne.cli import CommandLineInterface; "
            "print(CommandLineInterface().parser.parse_args(sys.argv[1:]).application)")
    result = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True, timeout=60)
    if result.returncode:
        return f"daphne refuses {args}: {result.stderr.strip().splitlines()[-1]}"
    module, _, attribute = result.stdout.strip().partition(":")
    if not module_exists(module) or not hasattr(importlib.import_module(module), attribute):
        return f"daphne's application {result.stdout.strip()} does not exist"
    return None


def command_problem(argv):
    """Why a recipe's command would not run here, or None. Only Blaze's own entry points are checked:
    manage.py commands and their options, `python -m` modules, scripts, Celery's and daphne's options."""
    python = argv[0] in ("python", "python3")
    if python and argv[1:2] == ["manage.py"]:
        name, args = argv[2], argv[3:]
        commands = get_commands()
        if name not in commands:
            return f"manage.py has no command {name!r}"
        command = load_command_class(commands[name], name)
        try:
            command.create_parser("manage.py", name).parse_args(args)
        except CommandError as exc:
            return f"manage.py {name} refuses {args}: {exc}"
    elif python and argv[1:2] == ["-m"]:
        if not module_exists(argv[2]):
            return f"no module {argv[2]!r} for python -m"
        if argv[2] == "blaze_site.serve":
            return daphne_arguments_problem(argv[3:])
    elif python and argv[1].endswith(".py"):
        if not (ROOT / argv[1]).is_file():
            return f"no script {argv[1]}"
    elif argv[0] == "celery":
        if argv[1:3] != ["-A", "blaze_site"]:
            return f"celery must load the app blaze_site: {argv}"
        # --help parses every option name and subcommand, then stops before connecting anywhere.
        result = subprocess.run([str(BIN / "celery"), *argv[1:], "--help"], cwd=ROOT, capture_output=True,
                                text=True, timeout=60)
        if result.returncode:
            return f"celery refuses {argv}: {result.stderr.strip().splitlines()[-1]}"
    return None


def path_problem(path):
    try:
        resolve(path)
    except Resolver404:
        return f"{path} is no URL of Blaze"
    return None


def validate_manifest(resource, version):
    """Strict (unknown fields are errors); a kind or apiVersion without a schema is an error too,
    where kubernetes-validate's command line would only warn."""
    return kubernetes_validate.validate(resource, version, strict=True)


def blaze_up_processes():
    """What `./blaze up` leaves running (its backgrounded lines), named as process_name() names them."""
    body = re.search(r"^cmd_up\(\) \{\n(.*?)^\}", (ROOT / "blaze").read_text(), re.MULTILINE | re.DOTALL).group(1)
    running = [line.strip() for line in body.splitlines() if re.search(r"&$", line.strip())]
    names = {process_name(shlex.split(line.replace('"$VENV/bin/', '"').replace('"$PY"', "python")))
             for line in running}
    names.discard(None)
    return names


def process_name(argv):
    """A long-running Blaze process as one name: `manage.py run_live_feed`, `celery worker`, `blaze_site.serve`."""
    argv = [Path(token).name if token.endswith(("python", "celery")) else token for token in argv]
    if argv[:2] == ["python", "manage.py"]:
        return f"manage.py {argv[2]}"
    if argv[:2] == ["python", "-m"]:
        return argv[2]
    if argv[:1] == ["celery"] and "worker" in argv:
        return "celery worker"
    return None


# The Dockerfiles -----------------------------------------------------------------------------------

def hadolint(*args, stdin=None):
    return subprocess.run([str(BIN / "hadolint"), "--no-color", "--failure-threshold", "warning", *args],
                          cwd=ROOT, input=stdin, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_the_dockerfiles_pass_hadolint(dockerfile):
    result = hadolint(str(dockerfile))
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_fails_a_warning():
    result = hadolint("-", stdin="FROM python:3.11-slim\nRUN pip install -r requirements.txt\n")
    assert result.returncode != 0 and "DL3042" in result.stdout


def test_the_images_run_as_a_non_root_user_and_probe_health():
    for path in DOCKERFILES:
        instructions = list(dockerfile_instructions(path))
        users = [rest for instruction, rest in instructions if instruction == "USER"]
        assert users and users[-1].split(":")[0] not in ("root", "0"), path.name
        assert any(instruction == "HEALTHCHECK" for instruction, _ in instructions), path.name


def test_the_cpu_image_installs_torch_from_the_cpu_index_first():
    instructions = list(dockerfile_instructions(DEPLOY / "Dockerfile"))
    assert instructions[0][1].startswith("python:3.11-slim")
    assert ("ARG", "TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu") in instructions
    installs = [argv for _, argv in dockerfile_commands(DEPLOY / "Dockerfile") if argv[:2] == ["pip", "install"]]
    assert "$TORCH_INDEX_URL" in installs[0] and "$(grep -E '^torch==' requirements.txt)" in installs[0]
    assert installs[1][-2:] == ["-r", "requirements.txt"]
    assert installs[2][-3:] == ["--no-deps", "-r", "requirements-nodeps.txt"]
    argvs = [argv for _, argv in dockerfile_commands(DEPLOY / "Dockerfile")]
    assert ["python", "manage.py", "collectstatic", "--noinput", "-v", "0"] in argvs
    assert argvs[-1][:3] == ["python", "-m", "blaze_site.serve"]


def test_the_cuda_image_names_its_cuda_base():
    instructions = dockerfile_instructions(DEPLOY / "Dockerfile.cuda")
    base = next(rest for instruction, rest in instructions if instruction == "FROM")
    assert re.fullmatch(r"nvidia/cuda:12\.\d+\.\d+-[a-z-]+-ubuntu\d+\.\d+", base)


# compose.yaml --------------------------------------------------------------------------------------

SERVICE_KEYS = {"image", "build", "command", "env_file", "environment", "volumes", "tmpfs", "ports", "deploy",
                "healthcheck", "depends_on", "restart", "profiles", "stop_grace_period"}


def test_compose_runs_what_blaze_up_runs():
    services = compose()["services"]
    assert {"postgres", "redis", "migrate", "web", "proxy", "worker", "health-checker", "live-feed"} <= set(services)
    for name, service in services.items():
        assert set(service) <= SERVICE_KEYS, f"{name}: unknown keys {set(service) - SERVICE_KEYS}"
    running = {process_name(argv) for service in services.values() for _, argv in compose_commands(service)}
    assert blaze_up_processes() <= running, blaze_up_processes() - running
    assert services["migrate"]["command"] == ["python", "manage.py", "migrate", "--noinput"]
    assert services["migrate"]["restart"] == "no"


def test_compose_puts_two_web_processes_behind_one_port():
    services = compose()["services"]
    assert services["web"]["deploy"]["replicas"] >= 2
    assert "ports" not in services["web"]  # reached only through the proxy, which sets X-Forwarded-For
    assert "--proxy-headers" in services["web"]["command"]
    assert [port.split(":")[-1] for port in services["proxy"]["ports"]] == ["80"]
    nginx = (DEPLOY / "nginx.conf").read_text()
    assert re.search(r"server web:8000\b", nginx) and "listen 80;" in nginx
    assert "proxy_set_header X-Forwarded-For $remote_addr;" in nginx
    mounted = [volume.split(":")[0] for volume in services["proxy"]["volumes"]]
    assert all((DEPLOY / source).is_file() for source in mounted)


def test_compose_healthchecks_and_start_order():
    services = compose()["services"]
    for name in ("postgres", "redis", "web", "proxy", "worker", "worker-gpu"):
        assert services[name]["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL"), name
    for name in ("migrate", "health-checker", "live-feed"):  # no port to ask
        assert services[name]["healthcheck"] == {"disable": True}, name
    for name, service in services.items():
        for dependency, condition in service.get("depends_on", {}).items():
            if condition["condition"] == "service_healthy":
                assert "test" in services[dependency]["healthcheck"], f"{name} waits on {dependency}'s healthcheck"
    assert services["migrate"]["depends_on"]["postgres"] == {"condition": "service_healthy"}
    for name in ("web", "worker", "worker-gpu", "health-checker", "live-feed"):
        assert services[name]["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}, name
        assert services[name]["depends_on"]["redis"] == {"condition": "service_healthy"}, name
    assert services["proxy"]["depends_on"]["web"] == {"condition": "service_healthy"}


def test_compose_shares_the_data_volume_and_reads_its_env_from_the_example():
    services = compose()["services"]
    blaze = [name for name, service in services.items() if service.get("image", "").startswith("blaze:")]
    assert set(blaze) == {"migrate", "web", "worker", "worker-gpu", "health-checker", "live-feed"}
    for name in blaze:
        assert "blaze-data:/var/lib/blaze" in services[name]["volumes"], name
        assert services[name]["env_file"] == "compose.env", name
    assert services["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    assert "compose.env" in (DEPLOY / ".gitignore").read_text().split()
    assert "deploy/compose.env" in (DEPLOY / "Dockerfile.dockerignore").read_text().split()


# Kubernetes ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", manifest_files(), ids=lambda path: path.name)
def test_the_manifests_validate(path):
    for version in KUBERNETES_VERSIONS:
        for doc in yaml.safe_load_all(path.read_text()):
            validate_manifest(doc, version)


def test_kubernetes_validate_fails_a_wrong_manifest():
    deployment = next(doc for _, doc in resources() if doc["kind"] == "Deployment")
    typo = json.loads(json.dumps(deployment))
    typo["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_manifest(typo, KUBERNETES_VERSIONS[-1])
    with pytest.raises(kubernetes_validate.SchemaNotFoundError):
        validate_manifest({**deployment, "apiVersion": "apps/v1beta1"}, KUBERNETES_VERSIONS[-1])


def test_the_kustomization_applies_every_manifest():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == [path.name for path in manifest_files()]
    images = {c["image"] for c in k8s_containers()}
    assert images == {image["name"] for image in kustomization["images"]}


def test_kubernetes_runs_what_blaze_up_runs():
    running = {process_name(argv) for c in k8s_containers() for _, argv in k8s_commands(c)}
    assert blaze_up_processes() <= running, blaze_up_processes() - running
    job = next(doc for doc, _ in workloads() if doc["kind"] == "Job")
    assert job["spec"]["template"]["spec"]["containers"][0]["command"] == ["python", "manage.py", "migrate",
                                                                           "--noinput"]


def deployment(name):
    return next((doc, spec) for doc, spec in workloads() if doc["metadata"]["name"] == name)


def test_the_web_deployment_probes_and_serves():
    doc, spec = deployment("blaze-web")
    web = spec["containers"][0]
    assert web["readinessProbe"]["exec"]["command"] == ["python", "deploy/healthcheck.py", "/health/detailed"]
    assert web["livenessProbe"]["httpGet"]["path"] == "/health"
    assert {"name": "Host", "value": "localhost"} in web["livenessProbe"]["httpGet"]["httpHeaders"]
    assert spec["initContainers"][0]["command"][:4] == ["python", "manage.py", "migrate", "--check"]
    service = next(d for _, d in resources() if d["kind"] == "Service")
    assert service["spec"]["selector"].items() <= doc["spec"]["template"]["metadata"]["labels"].items()
    assert service["spec"]["ports"][0]["targetPort"] == web["ports"][0]["name"]
    assert doc["spec"]["replicas"] >= 2


def test_the_gpu_worker_asks_for_one_gpu_on_a_gpu_node():
    _, spec = deployment("blaze-worker-gpu")
    resources_ = spec["containers"][0]["resources"]
    assert resources_["requests"]["nvidia.com/gpu"] == resources_["limits"]["nvidia.com/gpu"] == 1
    assert spec["nodeSelector"] and any(t["key"] == "nvidia.com/gpu" for t in spec["tolerations"])
    assert spec["containers"][0]["image"] == "blaze-cuda"


def test_single_processes_run_once():
    for name in ("blaze-live-feed", "blaze-health-checker"):
        doc, _ = deployment(name)
        assert doc["spec"]["replicas"] == 1, name
    assert deployment("blaze-health-checker")[0]["spec"]["strategy"]["type"] == "Recreate"  # it holds no lease


def test_every_reference_between_manifests_resolves():
    defined = {(doc["kind"], doc["metadata"]["name"]) for _, doc in resources()}
    for doc, spec in workloads():
        assert spec["securityContext"]["runAsNonRoot"] is True, doc["metadata"]["name"]
        for container in spec.get("initContainers", []) + spec["containers"]:
            for source in container.get("envFrom", []):
                kind, ref = ("ConfigMap", source["configMapRef"]) if "configMapRef" in source else (
                    "Secret", source["secretRef"])
                assert (kind, ref["name"]) in defined
        for volume in spec.get("volumes", []):
            claim = volume["persistentVolumeClaim"]["claimName"]
            assert ("PersistentVolumeClaim", claim) in defined


def test_the_secret_holds_only_marked_placeholders():
    secret = resource("Secret", "blaze-secrets")
    assert {"SECRET_KEY", "DATABASE_URL", "BLAZE_METRICS_TOKEN"} <= set(secret["stringData"])
    assert all("CHANGE-ME" in value for value in secret["stringData"].values())
    config = resource("ConfigMap", "blaze-config")
    assert not {"SECRET_KEY", "DATABASE_URL", "BLAZE_METRICS_TOKEN"} & set(config["data"])


# Everything the recipes name exists ----------------------------------------------------------------

def test_every_command_the_recipes_run_exists():
    commands = {tuple(argv): where for where, argv in recipe_commands()}  # each distinct one checked once
    problems = [f"{where}: {problem}" for argv, where in commands.items() if (problem := command_problem(list(argv)))]
    assert not problems, problems


def test_every_variable_the_recipes_set_is_read():
    names = set().union(*(dockerfile_env(path) for path in DOCKERFILES), compose_env(), k8s_env())
    assert {"SECRET_KEY", "DATABASE_URL", "REDIS_URL", "ALLOWED_HOSTS", "BLAZE_METRICS_TOKEN"} <= names
    assert not unknown_env(names)
    for name, reader in READ_ELSEWHERE.items():
        if (ROOT / reader).is_file():
            assert name in (ROOT / reader).read_text(), f"{reader} no longer reads {name}"


def test_every_probed_path_is_a_url_of_blaze():
    paths = set(probe_paths())
    assert {path for _, path in paths} >= {"/health", "/health/detailed"}
    problems = [f"{where}: {problem}" for where, path in sorted(paths) if (problem := path_problem(path))]
    assert not problems, problems


def test_the_probes_host_is_allowed():
    config = resource("ConfigMap", "blaze-config")
    example = (DEPLOY / "compose.env.example").read_text()
    for allowed in (config["data"]["ALLOWED_HOSTS"], re.search(r"^ALLOWED_HOSTS=(.*)$", example, re.M).group(1)):
        assert "localhost" in allowed.split(",")


def test_the_checks_catch_what_does_not_exist():
    assert "no command 'run_livefeed'" in command_problem(["python", "manage.py", "run_livefeed"])
    assert "refuses" in command_problem(["python", "manage.py", "migrate", "--no-input-please"])
    assert "no module" in command_problem(["python", "-m", "blaze_site.serv"])
    assert "no module" in command_problem(["python", "-m", "blaze_sites.serve"])
    assert "refuses" in command_problem(["celery", "-A", "blaze_site", "wroker"])
    assert "no script" in command_problem(["python", "deploy/healthcheck_.py", "/health"])
    assert unknown_env({"BLAZE_FEED_INTERVAL", "POSTGRES_DB", "REDIS_URL"}) == ["BLAZE_FEED_INTERVAL"]
    assert path_problem("/healthz") and not path_problem("/health")


@pytest.mark.slow
def test_daphne_takes_the_recipes_arguments():
    assert daphne_arguments_problem(["-b", "0.0.0.0", "--proxy-headerz", "blaze_site.asgi:application"])
    assert daphne_arguments_problem(["-b", "0.0.0.0", "blaze_site.asgi:app"])


# The probe script ----------------------------------------------------------------------------------

def healthcheck_module():
    spec = importlib.util.spec_from_file_location("healthcheck", DEPLOY / "healthcheck.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.django_db
def test_the_probes_token_opens_detailed_health_from_anywhere(client, settings, monkeypatch):
    settings.BLAZE_METRICS_TOKEN = "probe-token"
    monkeypatch.setenv("BLAZE_METRICS_TOKEN", "probe-token")
    headers = healthcheck_module().headers()
    assert client.get("/health/detailed", headers=headers, REMOTE_ADDR="10.1.2.3").status_code == 200
    headers.pop("Authorization")
    assert client.get("/health/detailed", headers=headers, REMOTE_ADDR="10.1.2.3").status_code in (401, 403)


@pytest.mark.slow
def test_the_probe_script_against_daphne(live_blaze):
    port = live_blaze.rsplit(":", 1)[1].strip("/")

    def probe(path):
        return subprocess.run([sys.executable, "deploy/healthcheck.py", path, port], cwd=ROOT, capture_output=True,
                              text=True, timeout=30)

    assert probe("/health").returncode == 0
    assert probe("/health/detailed").returncode == 0  # from loopback, as inside a container
    missing = probe("/healthz")
    assert missing.returncode == 1 and "HTTP 404" in missing.stderr


# Monitoring: the Prometheus scrape job and the Grafana dashboard -----------------------------------

# Labels every series has besides its own: the cluster exposition's, and the ones Prometheus adds.
ADDED_LABELS = {"host", "process", "job", "instance"}
PROMQL_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
                   "offset"}
GRAFANA_VARIABLES = {"__rate_interval", "__interval", "__range"}  # Grafana's own
# Prometheus's <scrape_config> keys, service discovery left out: it would find every web pod.
SCRAPE_CONFIG_KEYS = {
    "job_name", "scrape_interval", "scrape_timeout", "scrape_protocols", "metrics_path", "honor_labels",
    "honor_timestamps", "scheme", "params", "enable_compression", "basic_auth", "authorization", "oauth2",
    "follow_redirects", "enable_http2", "tls_config", "proxy_url", "http_headers", "static_configs",
    "relabel_configs", "metric_relabel_configs", "body_size_limit", "sample_limit", "label_limit",
}


def exported_series():
    """{series name as scraped: its labels} for every metric of telemetry/metrics.py and
    alerts/metrics.py, and the standard process collector's."""
    exposed = {  # a family's series: (suffix, the labels it adds)
        "counter": [("_total", set())], "gauge": [("", set())],
        "histogram": [("_bucket", {"le"}), ("_sum", set()), ("_count", set())],
        "summary": [("", {"quantile"}), ("_sum", set()), ("_count", set())],
    }
    series = {}
    for module in (metrics, alert_metrics):
        for metric in vars(module).values():
            if isinstance(metric, MetricWrapperBase):
                family = metric.describe()[0]
                for suffix, extra in exposed[family.type]:
                    series[family.name + suffix] = set(metric._labelnames) | ADDED_LABELS | extra
    for family in ProcessCollector(registry=None).collect():
        series.update({sample.name: set(ADDED_LABELS) for sample in family.samples})
    return series


def promql_reading(expr):
    """(metric names, [(metric or "", labels its matchers name)], [labels of each by/without]) of a
    PromQL expression: a light reading, enough for the dashboard's expressions, not a parser."""
    text = re.sub(r"\[[^\]]*\]", " ", expr)  # range selectors: [5m], [$__rate_interval]
    selectors = [(name, set(re.findall(r'([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)\s*"', body)))
                 for name, body in re.findall(r'([A-Za-z_:][\w:]*)?\s*\{((?:[^}"]|"[^"]*")*)\}', text)]
    text = re.sub(r'\{(?:[^}"]|"[^"]*")*\}', " ", text)
    text = re.sub(r'"[^"]*"', " ", text)
    groupings = [{label.strip() for label in labels.split(",") if label.strip()}
                 for labels in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", text)]
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = {name for name in re.findall(r"(?<![\w.$])([A-Za-z_:][\w:]*)\b(?!\s*\()", text)
             if name not in PROMQL_KEYWORDS}
    return names, selectors, groupings


def promql_problems(expr, series=None):
    """What an expression names that Blaze does not export: a metric (with its _total, _bucket, _sum,
    _count suffix), a label in a matcher or a by/without clause, a histogram_quantile not over `le`."""
    series = series or exported_series()
    names, selectors, groupings = promql_reading(expr)
    problems = [f"no metric {name}" for name in sorted(names - set(series))]
    known = names & set(series)
    for name, labels in selectors:
        for label in sorted(labels - series.get(name, labels)):
            problems.append(f"{name} has no label {label}")
    for grouping in groupings:
        for name in sorted(known):
            problems += [f"{name} has no label {label} to group by" for label in sorted(grouping - series[name])]
    if "histogram_quantile(" in expr:
        if not groupings or not all("le" in grouping for grouping in groupings):
            problems.append("histogram_quantile over buckets not grouped by le")
        problems += [f"histogram_quantile over {name}, not a _bucket series" for name in sorted(names)
                     if not name.endswith("_bucket")]
    return problems


def label_values_problems(query, series=None):
    """Grafana's `label_values(metric{matchers}, label)`: the metric and the label exist."""
    match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query)
    if not match:
        return [f"not label_values(metric, label): {query}"]
    series = series or exported_series()
    problems = promql_problems(match[1], series)
    names, _, _ = promql_reading(match[1])
    return problems + [f"{name} has no label {match[2]}" for name in sorted(names & set(series))
                       if match[2] not in series[name]]


def dashboard():
    return json.loads(DASHBOARD.read_text())


def dashboard_panels():
    """Every panel, those inside rows included."""
    for panel in dashboard()["panels"]:
        yield panel
        yield from panel.get("panels", [])


def scrape_job():
    config = resource("ConfigMap", "blaze-prometheus-scrape")
    (text,) = config["data"].values()
    (job,) = yaml.safe_load(text)["scrape_configs"]
    return job


def seconds(duration):
    assert re.fullmatch(r"(\d+[hms])+", duration), duration
    return sum(int(n) * {"h": 3600, "m": 60, "s": 1}[unit] for n, unit in re.findall(r"(\d+)([hms])", duration))


def test_prometheus_scrapes_the_web_service_once():
    job = scrape_job()
    assert set(job) <= SCRAPE_CONFIG_KEYS, set(job) - SCRAPE_CONFIG_KEYS
    (static,) = job["static_configs"]
    (target,) = static["targets"]
    service = resource("Service", "blaze-web")
    namespace = yaml.safe_load((K8S / "kustomization.yaml").read_text())["namespace"]
    assert target == f"blaze-web.{namespace}.svc.cluster.local:{service['spec']['ports'][0]['port']}"
    assert resolve(job["metrics_path"]).url_name == "metrics-prometheus"
    assert seconds(job["scrape_timeout"]) <= seconds(job["scrape_interval"])
    for _, doc in resources():  # nothing else invites a per-pod scrape
        annotations = doc.get("spec", {}).get("template", {}).get("metadata", {}).get("annotations", {})
        assert not any(key.startswith("prometheus.io/") for key in annotations), doc["metadata"]["name"]


def test_the_scrape_job_carries_what_blaze_asks_of_a_scraper():
    job = scrape_job()
    host = job["static_configs"][0]["targets"][0].rsplit(":", 1)[0]
    config = resource("ConfigMap", "blaze-config")["data"]
    assert host in config["ALLOWED_HOSTS"].split(",")
    authorization = job["authorization"]
    assert authorization.get("type", "Bearer") == "Bearer" and "credentials" not in authorization  # no token inline
    assert Path(authorization["credentials_file"]).name == "BLAZE_METRICS_TOKEN"
    assert "BLAZE_METRICS_TOKEN" in resource("Secret", "blaze-secrets")["stringData"]
    if config.get("BLAZE_HTTPS") == "1":
        assert job["http_headers"]["X-Forwarded-Proto"] == {"values": ["https"]}


@pytest.mark.django_db
def test_blaze_answers_the_scrape_jobs_request(client, settings, monkeypatch):
    """The request the job sends, under the ConfigMap's settings, from an address not on the allow list."""
    from dashboard import selectors

    job, config = scrape_job(), resource("ConfigMap", "blaze-config")["data"]
    settings.ALLOWED_HOSTS = config["ALLOWED_HOSTS"].split(",")
    settings.SECURE_SSL_REDIRECT = config.get("BLAZE_HTTPS") == "1"
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if config.get("BLAZE_BEHIND_PROXY") else None
    settings.BLAZE_METRICS_TOKEN = "scrape-token"
    monkeypatch.setattr(selectors, "prometheus_text", lambda: "")  # what it holds is tests/telemetry's part
    headers = {name: ", ".join(header["values"]) for name, header in job.get("http_headers", {}).items()}
    headers["Authorization"] = "Bearer scrape-token"

    def scrape(**sent):
        return client.get(job["metrics_path"], headers=sent, HTTP_HOST=job["static_configs"][0]["targets"][0],
                          REMOTE_ADDR="10.1.2.3")

    assert scrape(**headers).status_code == 200
    assert scrape(**{**headers, "Authorization": "Bearer wrong"}).status_code in (401, 403)
    if settings.SECURE_SSL_REDIRECT:  # without the header, HTTPS is demanded of the in-cluster scrape
        assert scrape(**{k: v for k, v in headers.items() if k != "X-Forwarded-Proto"}).status_code == 301


def test_the_dashboard_is_grafanas_shape():
    board = dashboard()
    assert board["schemaVersion"] >= 39 and board["uid"] and board["title"]
    variables = {variable["name"]: variable for variable in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert {"engine", "model", "route", "host"} <= set(variables)
    panels = list(dashboard_panels())
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    taken = set()
    for panel in panels:
        grid = panel["gridPos"]
        assert all(isinstance(grid[key], int) for key in "hwxy") and grid["x"] + grid["w"] <= 24, panel["title"]
        cells = {(x, y) for x in range(grid["x"], grid["x"] + grid["w"])
                 for y in range(grid["y"], grid["y"] + grid["h"])}
        assert not cells & taken, f"{panel['title']} overlaps another panel"
        taken |= cells


def test_every_dashboard_query_reads_the_chosen_prometheus():
    variables = {variable["name"] for variable in dashboard()["templating"]["list"]}
    chosen = {"type": "prometheus", "uid": "${datasource}"}
    for panel in dashboard_panels():
        if panel["type"] == "row":
            assert not panel.get("targets"), panel["title"]
            continue
        assert panel["datasource"] == chosen and panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == chosen, panel["title"]
            used = set(re.findall(r"\$\{?(\w+)", target["expr"])) - GRAFANA_VARIABLES
            assert used <= variables, f"{panel['title']}: no variable {used - variables}"


def test_the_dashboard_names_only_what_blaze_exports():
    series = exported_series()
    problems = []
    for panel in dashboard_panels():
        for target in panel.get("targets", []):
            problems += [f"{panel['title']}: {problem}" for problem in promql_problems(target["expr"], series)]
            _, _, groupings = promql_reading(target["expr"])
            legend = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", target.get("legendFormat", "")))
            if groupings and legend - set.intersection(*groupings):
                problems.append(f"{panel['title']}: legend {legend} names a label the query drops")
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            problems += [f"variable {variable['name']}: {problem}"
                         for problem in label_values_problems(variable["query"]["query"], series)]
    assert not problems, problems


def test_the_dashboard_checks_catch_what_blaze_does_not_export():
    assert not promql_problems('sum by (engine) (rate(blaze_tokens_generated_total{engine=~"$engine"}[1m]))')
    assert promql_problems("rate(blaze_tokens_generatd_total[1m])") == ["no metric blaze_tokens_generatd_total"]
    assert promql_problems("blaze_http_requests") and promql_problems("blaze_batch_size")  # suffixes are exported
    assert promql_problems("sum by (model) (rate(blaze_tokens_generated_total[1m]))") == [
        "blaze_tokens_generated_total has no label model to group by"]
    assert promql_problems('blaze_model_request_duration_seconds_count{status="500"}') == [
        "blaze_model_request_duration_seconds_count has no label status"]
    assert promql_problems("histogram_quantile(0.9, sum by (engine) (rate(blaze_batch_size_bucket[1m])))")
    assert promql_problems("histogram_quantile(0.9, sum by (le) (rate(blaze_batch_size_count[1m])))")
    assert not promql_problems('sum by (host, process) (rate(process_cpu_seconds_total{host=~"$host"}[5m]))')
    assert label_values_problems("label_values(blaze_queue_depth, model)")
    assert not label_values_problems('label_values(blaze_queue_depth{job=~"$job"}, engine)')
