"""The deployment files and docs/scaling.md against the code: every command line goes through the real CLI
parser, every embedded gateway.toml through the real config loader, every probe, port and secret reference
against the routes, the configuration and each other. Pure file checks, no container runtime or cluster.
``hadolint``, ``systemd-analyze`` and ``kubectl`` are used when they are installed, and say why not otherwise."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from cluster.worker import WorkerSlot
from gateway.app import create_app
from gateway.cli import _overrides, _parser
from gateway.config import GatewayConfig, load_config

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"
SYSTEMD = DEPLOY / "systemd"
NGINX = DEPLOY / "nginx" / "cherry-gateway.conf"
SCALING = ROOT / "docs" / "scaling.md"
SECRET = "deploy-test-secret-0123456789abcdef-xyz"
# What the kubelet's downward API and the Secret would put in the container's environment.
POD_ENV = {"NODE_IP": "10.0.1.11", "POD_NAME": "cherry-gateway-5d8f7c9b4-x2x7q",
           "CHERRY_REDIS_URL": "redis://:pw@redis-primary.cherry.svc:6379/0", "CHERRY_SECRET": SECRET}
SHELL_OPERATORS = {"&&", "||", ";", "|", ">", ">>", "<", "&", "(", ")"}
# Margin a stop needs beyond drain.timeout_s: the supervisor kills workers drain.timeout_s + 15 s after
# SIGTERM (gateway/cli.py), and each worker's aiohttp shutdown takes up to 5 s.
STOP_MARGIN_S = 20


# -- command lines ------------------------------------------------------------------------------------


def expand(text: str, env: Mapping[str, str]) -> str:
    """``${VAR}`` and ``$VAR`` as sh and systemd substitute them; a variable nobody sets is an error."""

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        assert name in env, f"{name} is used in {text!r} but nothing sets it"
        return env[name]

    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)", value, text)


def _is_program(words: list[str], i: int) -> int:
    """How many words name the gateway program at ``words[i]`` (0: it is not the gateway)."""
    word = words[i]
    if word == "cherry-gateway" or word.endswith("/bin/cherry-gateway"):
        return 1
    if re.fullmatch(r"(.*/)?python(3(\.\d+)?)?", word) and words[i + 1:i + 3] == ["-m", "gateway"]:
        return 3
    return 0


def gateway_argv(line: str) -> list[list[str]]:
    """The arguments of every gateway program in command position in one shell line."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|<>()")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    words = list(lexer)
    found = []
    start = True  # at the start of a command: after an operator, `exec`, `sudo -u X` or VAR=value
    i = 0
    while i < len(words):
        word = words[i]
        if word in SHELL_OPERATORS:
            start = True
        elif start and (word in ("exec", "sudo") or re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", word)):
            pass
        elif start and (width := _is_program(words, i)):
            end = i + width
            while end < len(words) and words[end] not in SHELL_OPERATORS:
                end += 1
            found.append(words[i + width:end])
            i = end
            continue
        else:
            start = False
        i += 1
    return found


def parse(argv: list[str], where: str) -> Any:
    """The real parser; argparse's exit on an unknown flag or a bad value becomes a failure naming the line."""
    try:
        return _parser().parse_args(argv)
    except SystemExit as exc:
        pytest.fail(f"{where}: `cherry-gateway {shlex.join(argv)}` does not parse (exit {exc.code})")


def shell_lines(text: str) -> Iterator[str]:
    """Lines of shell, with backslash continuations joined."""
    pending = ""
    for line in text.splitlines():
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        yield pending + line
        pending = ""
    if pending:
        yield pending


def shell_blocks(markdown: str) -> Iterator[str]:
    """Fenced ``sh``/``bash``/``shell`` blocks (the docs mark every block of commands so)."""
    for match in re.finditer(r"^```(\w*)\n(.*?)^```", markdown, re.S | re.M):
        if match.group(1) in ("sh", "bash", "shell"):
            yield match.group(2)


def inline_code(markdown: str) -> list[str]:
    prose = re.sub(r"^```.*?^```", "", markdown, flags=re.S | re.M)
    return re.findall(r"`([^`\n]+)`", prose)


# -- files --------------------------------------------------------------------------------------------


def k8s(name: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((K8S / name).read_text()) if doc]


def deployment() -> dict[str, Any]:
    (doc,) = k8s("deployment.yaml")
    return doc


def pod_spec() -> dict[str, Any]:
    spec: dict[str, Any] = deployment()["spec"]["template"]["spec"]
    return spec


def container() -> dict[str, Any]:
    (gateway,) = pod_spec()["containers"]
    return dict(gateway)


def container_script() -> str:
    gateway = container()
    assert gateway["command"] == ["/bin/sh", "-c"], "the container renders its config in sh, then execs"
    (script,) = gateway["args"]
    return str(script)


def container_env() -> dict[str, dict[str, Any]]:
    return {var["name"]: var for var in container()["env"]}


def configmap_toml() -> str:
    (doc,) = k8s("configmap.yaml")
    return str(doc["data"]["gateway.toml"])


def render(template: str, script: str, env: Mapping[str, str]) -> str:
    """What the container's sed makes of the ConfigMap: each ``s/@NAME@/${VAR}/g`` applied."""
    rules = re.findall(r"s/(@[A-Z_]+@)/\$\{([A-Z_]+)\}/g", script)
    assert rules, "the container script substitutes no placeholder"
    for placeholder, var in rules:
        template = template.replace(placeholder, env[var])
    left = re.findall(r"@[A-Z_]+@", template)
    assert not left, f"placeholders nobody substitutes: {left}"
    return template


def serve_command(script: str, env: Mapping[str, str]) -> list[str]:
    commands = [argv for line in shell_lines(expand(script, env)) for argv in gateway_argv(line)]
    assert len(commands) == 1, f"expected one gateway command in the container script, found {commands}"
    return commands[0]


def load(toml: str, argv: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
         env: Mapping[str, str]) -> GatewayConfig:
    """The configuration ``serve`` would run with: the file, then the command line's overrides."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    args = parse(argv, "config")
    path = tmp_path / "gateway.toml"
    path.write_text(toml)
    if args.config is not None:
        args.config = str(path)
    return load_config(args.config, _overrides(args))


def pod_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[GatewayConfig, list[str]]:
    script = container_script()
    argv = serve_command(script, POD_ENV)
    return load(render(configmap_toml(), script, POD_ENV), argv, tmp_path, monkeypatch, POD_ENV), argv


def get_routes() -> set[str]:
    app = create_app(load_config(None, {"dev": True, "ice.hosts": ["127.0.0.1"]}))
    return {route.resource.canonical for route in app.router.routes()
            if route.method == "GET" and route.resource is not None}


def unit_file() -> dict[str, list[str]]:
    """systemd's format, enough for these checks: key -> values (a key may repeat)."""
    values: dict[str, list[str]] = {}
    for line in (SYSTEMD / "cherry-gateway.service").read_text().splitlines():
        if line.strip() and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            values.setdefault(key.strip(), []).append(value.strip())
    return values


def env_file(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines()
                if line.strip() and not line.startswith("#"))


def dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments) of deploy/Dockerfile, continuations joined, comments dropped."""
    lines = [line for line in (DEPLOY / "Dockerfile").read_text().splitlines() if not line.lstrip().startswith("#")]
    out = []
    for line in shell_lines("\n".join(lines)):
        if line.strip():
            instruction, _, rest = line.strip().partition(" ")
            out.append((instruction.upper(), rest.strip()))
    return out


def docker_exec_form(instruction: str) -> list[str]:
    (value,) = [json.loads(rest) for name, rest in dockerfile() if name == instruction]
    assert isinstance(value, list), f"{instruction} must be in exec form (JSON), so the process is PID 1"
    return [str(word) for word in value]


def print_skip(tool: str, why: str) -> None:
    print(f"{tool}: skipped ({why}); the checks above do not depend on it")


def missing_tool(tool: str, why: str) -> None:
    """A validator .ci/run installs: missing in CI is a broken image (a failure), elsewhere a printed skip."""
    if os.environ.get("CI"):
        pytest.fail(f"{tool} cannot run in CI: {why}")
    print_skip(tool, why)


# -- Kubernetes ---------------------------------------------------------------------------------------


def test_every_kubernetes_file_parses_and_the_kustomization_lists_them_all():
    files = sorted(p.name for p in K8S.glob("*.yaml"))
    kinds = {name: [doc["kind"] for doc in k8s(name)] for name in files}
    assert kinds["deployment.yaml"] == ["Deployment"] and kinds["configmap.yaml"] == ["ConfigMap"]
    assert kinds["service.yaml"] == ["Service"]
    (kustomization,) = k8s("kustomization.yaml")
    assert sorted(kustomization["resources"]) == sorted(set(files) - {"kustomization.yaml"})


def test_the_configmap_validates_with_the_gateways_own_loader_as_the_pod_runs_it(tmp_path, monkeypatch):
    config, argv = pod_config(tmp_path, monkeypatch)
    assert config.cluster.redis_url == POD_ENV["CHERRY_REDIS_URL"], "the Redis URL comes from the Secret"
    assert config.cluster.node_id == POD_ENV["POD_NAME"]
    assert config.ice.hosts == (POD_ENV["NODE_IP"],), "ICE candidates on the node's address only"
    assert config.cluster.internal_host == POD_ENV["NODE_IP"]
    assert WorkerSlot.of(config.cluster, 0).internal_url(config.cluster) == f"http://{POD_ENV['NODE_IP']}:9400"
    assert config.server.host == "0.0.0.0" and config.server.public_url.startswith("https://")
    assert config.auth.secret_env and not config.auth.secret and not config.auth.secret_file
    assert not config.dev and "--dev" not in argv


def test_the_configmap_has_no_unknown_key_even_before_rendering(tmp_path, monkeypatch):
    # The raw placeholders are strings where strings go: the file is valid TOML with only known keys.
    monkeypatch.setenv("CHERRY_SECRET", SECRET)
    path = tmp_path / "raw.toml"
    path.write_text(configmap_toml())
    load_config(path, {"cluster.redis_url": "redis://127.0.0.1:6379/0"})


def test_one_worker_per_requested_core(tmp_path, monkeypatch):
    config, _ = pod_config(tmp_path, monkeypatch)
    resources = container()["resources"]
    assert config.cluster.workers == int(resources["requests"]["cpu"]), "--workers must match the CPU request"
    assert resources["limits"]["cpu"] == resources["requests"]["cpu"], "Guaranteed QoS: whole cores"


def test_the_container_gets_every_variable_the_config_and_script_read(tmp_path, monkeypatch):
    config, _ = pod_config(tmp_path, monkeypatch)
    env = container_env()
    script_vars = set(re.findall(r"\$\{([A-Z_]+)\}", container_script()))
    assert script_vars <= set(env), f"the script reads variables the container does not set: {script_vars - set(env)}"
    secret = env[config.auth.secret_env]["valueFrom"]["secretKeyRef"]
    assert secret["name"] == "cherry-gateway" and not secret.get("optional")
    assert env["CHERRY_REDIS_URL"]["valueFrom"]["secretKeyRef"]["name"] == "cherry-gateway"
    # The documented rotation variable exists, optional, so pods start without it.
    assert env["CHERRY_SECRET_PREVIOUS"]["valueFrom"]["secretKeyRef"].get("optional") is True
    assert "CHERRY_SECRET_PREVIOUS" in configmap_toml()
    for name in ("NODE_IP", "POD_NAME"):
        assert "fieldRef" in env[name]["valueFrom"]


def test_probes_hit_the_gateways_routes_on_its_port(tmp_path, monkeypatch):
    config, _ = pod_config(tmp_path, monkeypatch)
    gateway = container()
    ports = {port["name"]: port["containerPort"] for port in gateway["ports"]}
    routes = get_routes()
    expected = {"readinessProbe": "/readyz", "livenessProbe": "/healthz", "startupProbe": "/healthz"}
    for probe, path in expected.items():
        get = gateway[probe]["httpGet"]
        assert get["path"] == path, f"{probe} must use {path}: /readyz fails while draining, /healthz does not"
        assert path in routes
        assert ports[get["port"]] == config.server.port


def test_internal_ports_follow_the_advertised_port_and_stay_clear_of_the_public_one(tmp_path, monkeypatch):
    config, _ = pod_config(tmp_path, monkeypatch)
    ports = {port["name"]: port["containerPort"] for port in container()["ports"]}
    internal = [WorkerSlot.of(config.cluster, i).internal_port(config.cluster) for i in range(config.cluster.workers)]
    assert [ports[f"internal-{i}"] for i in range(config.cluster.workers)] == internal
    assert config.server.port not in internal


def test_each_workers_udp_slice_fits_its_viewers_and_pipes(tmp_path, monkeypatch):
    config, _ = pod_config(tmp_path, monkeypatch)
    cl = config.cluster
    # One port per session and ICE host address; pipes at an origin and port reuse distance need as much again.
    need = 2 * config.limits.process_viewer_capacity * len(config.ice.hosts)
    for i in range(cl.workers):
        ports = WorkerSlot(i, cl.workers, "n").udp_ports(cl)
        assert ports is not None, "a fixed UDP range is what the firewall opens"
        assert ports[1] - ports[0] + 1 >= need, f"worker {i}: {ports}"


def test_drain_fits_in_the_termination_grace_period(tmp_path, monkeypatch):
    config, _ = pod_config(tmp_path, monkeypatch)
    pre_stop = container()["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0].endswith("sleep")
    grace = pod_spec()["terminationGracePeriodSeconds"]
    assert grace >= float(pre_stop[1]) + config.drain.timeout_s + STOP_MARGIN_S
    assert config.drain.timeout_s >= 3600, "a drain as long as a show"


def test_the_pod_is_on_the_host_network_one_per_node_and_unprivileged():
    spec = pod_spec()
    assert spec["hostNetwork"] is True and spec["dnsPolicy"] == "ClusterFirstWithHostNet"
    (term,) = spec["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    labels = deployment()["spec"]["template"]["metadata"]["labels"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert term["labelSelector"]["matchLabels"].items() <= labels.items()
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == docker_uid()
    assert container()["securityContext"]["allowPrivilegeEscalation"] is False


def test_the_rendered_config_is_written_where_serve_reads_it_and_the_template_is_the_configmap():
    script = container_script()
    argv = serve_command(script, POD_ENV)
    config_path = Path(parse(argv, "deployment.yaml").config)
    template = re.search(r"(/\S+\.toml) >", script)
    assert template is not None
    written = re.search(r"> (/\S+\.toml)", script)
    assert written is not None and Path(written.group(1)) == config_path
    mounts = {m["mountPath"]: m["name"] for m in container()["volumeMounts"]}
    volumes = {v["name"]: v for v in pod_spec()["volumes"]}
    assert volumes[mounts[str(Path(template.group(1)).parent)]]["configMap"]["name"] == k8s("configmap.yaml")[0][
        "metadata"]["name"]
    assert "emptyDir" in volumes[mounts[str(config_path.parent)]], "a writable directory on a read-only root"
    assert "exec cherry-gateway" in script, "exec: the supervisor is PID 1 and alone gets SIGTERM"


def test_the_service_fronts_the_http_port_of_the_pods_and_keeps_client_addresses():
    (service,) = k8s("service.yaml")
    labels = deployment()["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["externalTrafficPolicy"] == "Local"
    names = {port["name"] for port in container()["ports"]}
    assert [port["targetPort"] for port in service["spec"]["ports"]] == ["http"] and "http" in names
    assert all(port["protocol"] == "TCP" for port in service["spec"]["ports"]), "media never goes through it"


def test_kubectl_renders_the_kustomization_when_it_is_installed(tmp_path):
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        print_skip("kubectl kustomize", "kubectl is not installed")
        return
    # An empty kubeconfig: rendering is offline, and no cluster or credential is ever looked at.
    empty = tmp_path / "kubeconfig"
    empty.write_text("")
    result = subprocess.run([kubectl, "kustomize", str(K8S)], capture_output=True, text=True, timeout=60,
                            env={"KUBECONFIG": str(empty), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    kinds = sorted(doc["kind"] for doc in yaml.safe_load_all(result.stdout) if doc)
    assert kinds == ["ConfigMap", "Deployment", "PodDisruptionBudget", "Service"]


# -- systemd ------------------------------------------------------------------------------------------


def systemd_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[GatewayConfig, list[str]]:
    env = {**env_file(SYSTEMD / "cherry-gateway.env.example"), "CHERRY_SECRET": SECRET}
    (exec_start,) = unit_file()["ExecStart"]
    (argv,) = gateway_argv(expand(exec_start, env))
    toml = (SYSTEMD / "gateway.toml").read_text()
    return load(toml, argv, tmp_path, monkeypatch, env), argv


def test_the_units_exec_start_parses_and_runs_the_shipped_config(tmp_path, monkeypatch):
    config, argv = systemd_config(tmp_path, monkeypatch)
    assert parse(argv, "ExecStart").command == "serve"
    assert config.cluster.redis_url.startswith("redis://") and not config.dev
    assert config.auth.secret_env == "CHERRY_SECRET"
    assert config.cluster.internal_host != "0.0.0.0", "the internal API listens on the private address only"


def test_the_units_stop_drains_every_worker_within_its_timeout(tmp_path, monkeypatch):
    config, _ = systemd_config(tmp_path, monkeypatch)
    unit = unit_file()
    assert unit["KillSignal"] == ["SIGTERM"]
    assert unit["KillMode"] == ["mixed"], "only the supervisor gets SIGTERM; a second one kills a worker"
    assert float(unit["TimeoutStopSec"][0]) >= config.drain.timeout_s + STOP_MARGIN_S
    assert unit["Restart"] == ["on-failure"] and unit["RestartPreventExitStatus"] == ["2"]
    assert int(unit["LimitNOFILE"][0]) >= 65536
    assert unit["EnvironmentFile"] == ["/etc/cherry-gateway/cherry-gateway.env"]
    assert unit["User"] != ["root"]


def test_the_environment_file_template_sets_what_the_unit_and_config_read():
    names = set(env_file(SYSTEMD / "cherry-gateway.env.example"))
    (exec_start,) = unit_file()["ExecStart"]
    assert set(re.findall(r"\$\{([A-Z_]+)\}", exec_start)) <= names
    assert "CHERRY_SECRET" in names
    assert env_file(SYSTEMD / "cherry-gateway.env.example")["CHERRY_SECRET"] == "", "no secret in the repository"


def test_the_systemd_nodes_udp_range_fits_sixteen_workers(tmp_path, monkeypatch):
    config, _ = systemd_config(tmp_path, monkeypatch)
    cl = dataclasses.replace(config.cluster, workers=16)  # what the file's comment sizes it for
    first, last = WorkerSlot(15, 16, "n").udp_ports(cl) or (0, -1)
    assert last - first + 1 >= 2 * config.limits.process_viewer_capacity * len(config.ice.hosts)


def render_unit(prefix: Path) -> str:
    result = subprocess.run([str(SYSTEMD / "render.sh"), str(prefix)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_the_unit_is_a_template_of_the_install_prefix_and_render_sh_fills_it_in(tmp_path):
    template = (SYSTEMD / "cherry-gateway.service").read_text()
    settings = [line for line in template.splitlines() if not line.startswith("#")]
    assert any(line.startswith("ExecStart=@PREFIX@/bin/cherry-gateway serve") for line in settings)
    assert not any("/opt/cherry" in line for line in settings), "no install path but the placeholder"
    rendered = render_unit(tmp_path / "venv")
    assert "@" not in rendered.replace("@PREFIX@", ""), "a placeholder nobody fills in"
    assert "@PREFIX@" not in rendered and f"ExecStart={tmp_path}/venv/bin/cherry-gateway serve" in rendered
    for bad in ("relative/path", "/opt/with space", "/opt/a|b"):
        assert subprocess.run([str(SYSTEMD / "render.sh"), bad], capture_output=True).returncode == 2, bad


def test_systemctl_reload_sends_sighup_to_the_supervisor_only():
    unit = unit_file()
    assert unit["ExecReload"] == ["/bin/kill -HUP $MAINPID"], "the supervisor forwards SIGHUP to every worker"
    assert unit["KillMode"] == ["mixed"]


def test_systemd_analyze_verifies_the_rendered_unit(tmp_path):
    tool = shutil.which("systemd-analyze")
    if tool is None:
        missing_tool("systemd-analyze verify", "systemd-analyze is not installed (Debian package systemd)")
        return
    # verify wants the ExecStart binary to exist: render for this checkout's virtualenv.
    prefix = Path(shutil.which("cherry-gateway") or ROOT / ".venv" / "bin" / "cherry-gateway").parent.parent
    if not (prefix / "bin" / "cherry-gateway").exists():
        missing_tool("systemd-analyze verify", "no cherry-gateway program installed to render the unit for")
        return
    unit = tmp_path / "cherry-gateway.service"
    unit.write_text(render_unit(prefix))
    result = subprocess.run([tool, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    # It only warns (exit 0) about a setting it cannot parse: any line about our unit is a failure.
    complaints = [line for line in (result.stdout + result.stderr).splitlines() if unit.name in line]
    assert result.returncode == 0 and not complaints, result.stdout + result.stderr


# -- nginx --------------------------------------------------------------------------------------------


def nginx_blocks() -> dict[str, str]:
    """location pattern -> its body, from the example's TLS server."""
    text = re.sub(r"#[^\n]*", "", NGINX.read_text())
    return {m.group(1).strip(): m.group(2) for m in re.finditer(r"^\s*location ([^{\n]+)\{([^}]*)\}", text, re.M)}


def test_the_nginx_example_keeps_operations_endpoints_private():
    blocks = nginx_blocks()
    assert "return 404" in blocks["= /metrics"] and "proxy_pass" not in blocks["= /metrics"]
    assert "return 404" in blocks["^~ /dashboard"], "/dashboard, /dashboard/data and /dashboard/cluster"
    routes = get_routes()
    assert "/metrics" in routes and "/dashboard" in routes, "the routes the example hides exist"


def test_the_nginx_example_proxies_websockets_and_whip_whep_with_their_headers():
    text = re.sub(r"#[^\n]*", "", NGINX.read_text())
    blocks = nginx_blocks()
    for path in ("/ws/", "/whip/", "/whep/", "/"):
        assert "proxy_pass http://cherry_gateway;" in blocks[path], path
    assert re.search(r"proxy_read_timeout (\d+)h;", blocks["/ws/"]), "room sockets live for hours"
    # A location with its own proxy_set_header would inherit none of the server's: keep them all there.
    assert not any("proxy_set_header" in body for body in blocks.values())
    for header in ("Upgrade $http_upgrade", "Connection $cherry_connection", "X-Forwarded-For $remote_addr",
                   "X-Forwarded-Proto $scheme", "Host $http_host"):
        assert f"proxy_set_header {header};" in text, header
    assert "proxy_http_version 1.1;" in text and "proxy_redirect off;" in text
    assert re.search(r"client_max_body_size (\d+)k;", text).group(1) == str(  # type: ignore[union-attr]
        GatewayConfig().limits.max_body_bytes // 1024)


def test_nginx_accepts_the_example(tmp_path):
    nginx = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if Path(p).exists()), None)
    if nginx is None:
        missing_tool("nginx -t", "nginx is not installed (Debian package nginx)")
        return
    from tests.certs import TestCa
    from tests.nginx_conf import nginx_argv, render_example, write_wrapper

    ca = TestCa.create(tmp_path / "ca")
    ca.issue(tmp_path / "cert.pem", tmp_path / "key.pem", "localhost")
    conf = write_wrapper(tmp_path / "nginx", render_example(tmp_path / "cert.pem", tmp_path / "key.pem", 8443, 8081,
                                                            8080))
    result = subprocess.run(nginx_argv(nginx, conf, "-t", "-q"), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


# -- the image ----------------------------------------------------------------------------------------


def docker_uid() -> int:
    (user,) = [rest for name, rest in dockerfile() if name == "USER"]
    run = " ".join(rest for name, rest in dockerfile() if name == "RUN")
    name = user.split(":")[0]
    match = re.search(rf"useradd .*--uid (\d+) .*{re.escape(name)}\b", run)
    assert match is not None, f"USER {user} must be created with a fixed uid"
    return int(match.group(1))


def test_the_image_runs_cherry_gateway_serve_as_an_unprivileged_user():
    entrypoint = docker_exec_form("ENTRYPOINT")
    assert entrypoint == ["cherry-gateway", "serve"]
    args = parse([*entrypoint[1:], *docker_exec_form("CMD")], "Dockerfile ENTRYPOINT + CMD")
    assert args.command == "serve"
    assert docker_uid() != 0
    (user,) = [rest for name, rest in dockerfile() if name == "USER"]
    assert user.split(":")[0] not in ("root", "0")
    bases = [rest.split()[0] for name, rest in dockerfile() if name == "FROM"]
    assert all(re.fullmatch(r"python:3\.1[1-9]-slim-(bookworm|trixie)", base) for base in bases), bases


def test_the_image_bakes_in_no_secret():
    for name, rest in dockerfile():
        if name in ("ENV", "ARG", "LABEL"):
            assert not re.search(r"SECRET|PASSWORD|TOKEN|CREDENTIAL", rest, re.I), f"{name} {rest}"
    # The reference config it ships requires a secret from outside and holds none.
    shipped = load_config(ROOT / "configs" / "gateway.toml", {"dev": True})
    assert shipped.auth.secret == "" and shipped.auth.secret_env == ""


def test_the_image_copies_every_package_the_gateway_imports():
    copied = {rest.split()[0].rstrip("/") for name, rest in dockerfile() if name == "COPY" and "--from" not in rest}
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    for source in copied:
        assert (ROOT / source).exists(), f"COPY {source}: no such path"
        assert source not in ignored, f"COPY {source} is excluded by .dockerignore"
    first_party = {p.name for p in ROOT.iterdir() if (p / "__init__.py").exists()}
    needed: set[str] = set()
    for package in copied & first_party:
        for path in (ROOT / package).rglob("*.py"):
            needed |= set(re.findall(r"^\s*(?:from|import) (\w+)", path.read_text(), re.M)) & first_party
    assert needed <= copied, f"the image lacks {needed - copied}"


def test_the_image_exposes_the_ports_the_pod_uses(tmp_path, monkeypatch):
    config, _ = pod_config(tmp_path, monkeypatch)
    exposed = " ".join(rest for name, rest in dockerfile() if name == "EXPOSE").split()
    tcp = [p.removesuffix("/tcp") for p in exposed if p.endswith("/tcp")]
    assert str(config.server.port) in tcp
    first_internal = WorkerSlot.of(config.cluster, 0).internal_port(config.cluster)
    last_internal = WorkerSlot.of(config.cluster, config.cluster.workers - 1).internal_port(config.cluster)
    assert any(lo <= first_internal and last_internal <= hi for lo, hi in (
        tuple(int(x) for x in (p.split("-") * 2)[:2]) for p in tcp))
    assert f"{config.cluster.udp_port_min}-{config.cluster.udp_port_max}/udp" in exposed


def test_hadolint_accepts_the_dockerfile_when_it_is_installed():
    tool = shutil.which("hadolint")
    if tool is None:
        print_skip("hadolint", "hadolint is not installed")
        return
    result = subprocess.run([tool, str(DEPLOY / "Dockerfile")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


# -- docs/scaling.md ----------------------------------------------------------------------------------


def test_every_gateway_command_in_the_scaling_doc_parses():
    text = SCALING.read_text()
    found = 0
    for block in shell_blocks(text):
        for line in shell_lines(block):
            for argv in gateway_argv(line):
                parse(argv, "docs/scaling.md")
                found += 1
    for span in inline_code(text):
        if span.startswith(("cherry-gateway ", "python -m gateway")):
            for argv in gateway_argv(span):
                parse(argv, "docs/scaling.md (inline)")
                found += 1
    assert found >= 2, "the extractor found no gateway command in docs/scaling.md"


def test_docker_run_in_the_scaling_doc_passes_serve_flags_after_the_image():
    entrypoint = docker_exec_form("ENTRYPOINT")
    runs = 0
    for block in shell_blocks(SCALING.read_text()):
        for line in shell_lines(block):
            words = shlex.split(line, comments=True)
            if words[:2] != ["docker", "run"]:
                continue
            image = next(i for i, word in enumerate(words) if "/cherry-gateway:" in word)
            parse([*entrypoint[1:], *words[image + 1:]], "docs/scaling.md docker run")
            runs += 1
    assert runs >= 1


def test_settings_named_in_the_scaling_doc_exist():
    text = SCALING.read_text()
    sections = {f.name: f.type for f in dataclasses.fields(GatewayConfig)}
    defaults = GatewayConfig()
    for section, key in re.findall(r"`([a-z]+)\.([a-z_]+)`", text):
        if section in sections:
            assert hasattr(getattr(defaults, section), key), f"docs/scaling.md names {section}.{key}: no such setting"


def test_endpoints_named_in_the_scaling_doc_exist():
    routes = get_routes() | {"/internal/healthz"}  # the internal API's own unauthenticated route
    for path in re.findall(r"`GET (/[a-z/]+)`", SCALING.read_text()):
        assert path in routes, f"docs/scaling.md names GET {path}: no such route"


def test_readme_and_operations_link_the_scaling_doc():
    assert "(docs/scaling.md)" in (ROOT / "README.md").read_text()
    assert "(scaling.md)" in (ROOT / "docs" / "operations.md").read_text()


def test_the_extractor_finds_commands_only_in_command_position():
    # The tests above are only as good as this: a unit name or an image name is not a command.
    assert gateway_argv("systemctl stop cherry-gateway") == []
    assert gateway_argv("kubectl rollout status deployment/cherry-gateway") == []
    assert gateway_argv("sed x > /run/c.toml && exec cherry-gateway serve --workers 8 # why") == [
        ["serve", "--workers", "8"]]
    assert gateway_argv("CI=1 .venv/bin/python -m gateway serve --dev | tee log") == [["serve", "--dev"]]
    with pytest.raises(pytest.fail.Exception):
        parse(["serve", "--workers", "N"], "a placeholder")


# -- docs/deployment.md -------------------------------------------------------------------------------

DEPLOYMENT = ROOT / "docs" / "deployment.md"
# Settings docs/deployment.md describes that other work of the same issue adds (trusted proxies, room-socket
# origins; the [operations] section is skipped until it exists): checked like the rest once the tree has them.
def test_every_gateway_command_in_the_deployment_doc_parses():
    found = 0
    for block in shell_blocks(DEPLOYMENT.read_text()):
        for line in shell_lines(block):
            for argv in gateway_argv(line):
                args = parse(argv, "docs/deployment.md")
                found += 1
                if args.tls_cert:
                    assert args.tls_key, "the TLS example gives both files"
    assert found >= 1, "the extractor found no gateway command in docs/deployment.md"


def test_settings_named_in_the_deployment_doc_exist():
    text = DEPLOYMENT.read_text()
    defaults = GatewayConfig()
    sections = {f.name for f in dataclasses.fields(GatewayConfig)}
    named = set(re.findall(r"`\[?\[?([a-z]+)\.([a-z_]+)", text))
    assert ("server", "tls_cert") in named and ("cluster", "udp_port_min") in named
    assert ("operations", "port") in named and ("server", "trusted_proxies") in named
    for section, key in named:
        if section not in sections:  # not a setting: a file name such as gateway.toml
            continue
        assert hasattr(getattr(defaults, section), key), f"docs/deployment.md names {section}.{key}: no such setting"


def test_files_linked_from_the_deployment_doc_exist():
    for target in re.findall(r"\]\((\.\./[^)#]+)", DEPLOYMENT.read_text()):
        assert (DEPLOYMENT.parent / target).exists(), target
    for anchor_doc, anchor in re.findall(r"\]\(([a-z]+\.md)#([a-z0-9-]+)\)", DEPLOYMENT.read_text()):
        headings = re.findall(r"^#+ (.+)$", (DEPLOYMENT.parent / anchor_doc).read_text(), re.M)
        slugs = {re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-") for h in headings}
        assert anchor in slugs, f"{anchor_doc}#{anchor}: no such heading"


def test_readme_and_operations_link_the_deployment_doc():
    readme = (ROOT / "README.md").read_text()
    assert "(docs/deployment.md)" in readme
    first_section = readme.split("\n## ", 2)[1]
    assert "deployment.md" not in first_section, "the README's first section stays the two commands"
    assert "(deployment.md)" in (ROOT / "docs" / "operations.md").read_text()
