"""Playbooks the ansible driver generates and runs: deploy, start agents, run, fetch, status, cleanup.

Each playbook is plain data written as YAML into the controller's run folder
(so what ran on the hosts can be read afterwards) and run with the real
``ansible-playbook``. Ansible is kept off the hosts' home directories:
pipelining on, its remote temporary files under the run's own folder
(``ANSIBLE_REMOTE_TMP``), no fact gathering. Tasks that report data print one
``PBRESULT {json}`` line, read back through the ``oneline`` callback.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from probatorium import procs
from probatorium.errors import InfraError
from probatorium.hosts.hostside import MARKER_ENV, RUN_PREFIX
from probatorium.hosts.inventory import ansible_tool

RESULT_TAG = "PBRESULT "
_LINE = re.compile(r"^(?P<host>\S+) \| (?P<state>[A-Z!]+[A-Z!:]*)(?P<rest>.*)$")
HOST_PYTHON = "{{ ansible_python_interpreter | default('python3') }}"


def run_folder_on_host(run_id: str) -> str:
    return f"{RUN_PREFIX}{run_id}"


def host_env(run_id: str) -> dict[str, str]:
    """What every process deploy and the run start on a host carries: the marker, caches inside the run folder."""
    base = run_folder_on_host(run_id)
    return {MARKER_ENV: run_id, "XDG_CACHE_HOME": f"{base}/cache", "PROBATORIUM_STATE_DIR": f"{base}/state",
            "TMPDIR": f"{base}/tmp", "PROBATORIUM_REFAPPS_DIR": f"{base}/refapps", "PIP_NO_CACHE_DIR": "1",
            "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PYTHONNOUSERSITE": "1", "HOME": f"{base}/home"}


@dataclass
class PlaybookResult:
    """What one ansible-playbook run said: per-host PBRESULT objects and failures."""

    code: int
    results: dict[str, list[dict]] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)
    output: str = ""

    def first_failure(self) -> str:
        if self.failures:
            host, why = next(iter(self.failures.items()))
            return f"{host}: {why}"
        tail = [line for line in self.output.strip().splitlines() if line.strip()][-1:]
        return tail[0][:300] if tail else f"ansible-playbook exit {self.code}"


def _failure_reason(rest: str) -> str:
    """The useful words of a oneline failure: the module's msg/stderr, else the raw text."""
    text = rest.split("=>", 1)[1].strip() if "=>" in rest else rest.strip(" |:!")
    try:
        doc = json.loads(text)
    except ValueError:
        return text[:300]
    parts = [str(doc.get(k)) for k in ("msg", "stderr") if doc.get(k)]
    return " | ".join(p.strip().splitlines()[-1] for p in parts)[:300] or text[:300]


def parse_oneline(output: str) -> tuple[dict[str, list[dict]], dict[str, str]]:
    """PBRESULT objects and failure reasons per host from the oneline callback's output (pure)."""
    results: dict[str, list[dict]] = {}
    failures: dict[str, str] = {}
    for line in output.splitlines():
        match = _LINE.match(line)
        if not match:
            continue
        host, state, rest = match.group("host"), match.group("state"), match.group("rest")
        if state.startswith(("FAILED", "UNREACHABLE")):
            failures.setdefault(host, ("unreachable: " if state.startswith("UNREACHABLE") else "")
                                + _failure_reason(rest))
            continue
        found = rest.find(RESULT_TAG)
        if found >= 0:
            body = rest[found + len(RESULT_TAG):]
            body = body.split(" (stderr)", 1)[0].strip()
            try:
                results.setdefault(host, []).append(json.loads(body.replace("\\n", "\n")))
            except ValueError:
                failures.setdefault(host, f"unreadable result: {body[:200]}")
    return results, failures


def control_dir() -> Path:
    """The controller's ssh ControlPath folder: short (a Unix socket path has ~100 bytes), private."""
    path = Path(tempfile.gettempdir()) / f"pb-ansible-cp-{os.geteuid()}"
    path.mkdir(mode=0o700, exist_ok=True)
    return path


def ansible_env(workdir: Path, remote_tmp: str) -> dict[str, str]:
    """The environment ansible-playbook runs with (nothing of it lands in a host's home)."""
    local = workdir / ".ansible-local"
    local.mkdir(parents=True, exist_ok=True)
    return {**os.environ, "ANSIBLE_REMOTE_TMP": remote_tmp, "ANSIBLE_LOCAL_TEMP": str(local),
            "ANSIBLE_PIPELINING": "1", "ANSIBLE_GATHERING": "explicit", "ANSIBLE_RETRY_FILES_ENABLED": "0",
            "ANSIBLE_STDOUT_CALLBACK": "oneline", "ANSIBLE_NOCOLOR": "1", "ANSIBLE_DEPRECATION_WARNINGS": "0",
            "ANSIBLE_PYTHON_INTERPRETER": os.environ.get("ANSIBLE_PYTHON_INTERPRETER", "auto_silent"),
            "ANSIBLE_SSH_ARGS": "-o ControlMaster=auto -o ControlPersist=10s",
            "ANSIBLE_SSH_CONTROL_PATH_DIR": str(control_dir()), "ANSIBLE_FORKS": "10",
            "ANSIBLE_HOST_KEY_CHECKING": os.environ.get("ANSIBLE_HOST_KEY_CHECKING", "True"),
            # a busy host (or a loaded CI machine) may take more than ansible's 10 s to accept SSH:
            # a slow connect must not read as "unreachable"; a refused one still fails at once
            "ANSIBLE_TIMEOUT": os.environ.get("ANSIBLE_TIMEOUT", "30"),
            "ANSIBLE_SSH_RETRIES": os.environ.get("ANSIBLE_SSH_RETRIES", "2")}


def run_playbook(workdir: Path, name: str, plays: list[dict], inventory: Path, variables: dict,
                 remote_tmp: str, timeout: float, limit: list[str] | None = None) -> PlaybookResult:
    """Write `plays` as ``workdir/<name>.yml`` and run it; the parsed result (never raises on a failed task)."""
    workdir.mkdir(parents=True, exist_ok=True)
    book = workdir / f"{name}.yml"
    book.write_text(yaml.safe_dump(plays, sort_keys=False, width=1000))
    vars_file = workdir / f"{name}-vars.json"
    vars_file.write_text(json.dumps(variables))
    vars_file.chmod(0o600)
    argv = [ansible_tool("ansible-playbook"), "-i", str(inventory), "-e", f"@{vars_file}", str(book)]
    if limit:
        argv += ["--limit", ",".join(limit)]
    # Spawned with PR_SET_PDEATHSIG: a controller killed with SIGKILL takes its playbooks (and their ssh) along.
    spawned = procs.spawn(argv, cwd=workdir, env=ansible_env(workdir, remote_tmp), stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out_b, err_b = spawned.popen.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        procs.stop(spawned, grace=3.0)
        raise InfraError(f"ansible-playbook {name} did not finish within {timeout:.0f} s") from None
    except BaseException:
        procs.stop(spawned, grace=3.0)
        raise
    out, err = out_b.decode(errors="replace"), err_b.decode(errors="replace")
    (workdir / f"{name}.log").write_text(out + err)
    results, failures = parse_oneline(out)
    code = spawned.popen.returncode
    if code != 0 and not failures:
        failures["ansible-playbook"] = (err.strip().splitlines() or [f"exit {code}"])[-1][:300]
    return PlaybookResult(code, results, failures, out + err)


def report_task(name: str, argv: list[str], stdin: str | None = None, **extra) -> dict:
    """A command task whose stdout is one PBRESULT line (argv[...] prints it)."""
    task: dict = {"name": name, "ansible.builtin.command": {"argv": argv}, **extra}
    if stdin is not None:
        task["ansible.builtin.command"]["stdin"] = stdin
    return task


def hostside_source() -> str:
    """The stdlib script fed to each host's python3 for status and cleanup, printing PBRESULT."""
    source = (Path(__file__).parent / "hostside.py").read_text()
    return source.replace('print(json.dumps(cleanup(skip, only, known)))', f'print({RESULT_TAG!r} + json.dumps(cleanup(skip, only, known)))') \
                 .replace('print(json.dumps(status()))', f'print({RESULT_TAG!r} + json.dumps(status()))')


def status_play(hosts: list[str]) -> list[dict]:
    return [{"name": "probatorium status", "hosts": ",".join(hosts), "gather_facts": False, "tasks": [
        {"name": "reachable", "ansible.builtin.ping": {}},
        report_task("host manifests and marked processes", [HOST_PYTHON, "-", "status"], hostside_source(),
                    changed_when=False)]}]


def cleanup_play(hosts: list[str], skip: list[str], only: list[str] | None = None,
                 known: list[str] | None = None) -> list[dict]:
    argv = [HOST_PYTHON, "-", "cleanup"] + (["--skip", ",".join(skip)] if skip else []) \
        + (["--only", ",".join(only)] if only else []) + (["--known", ",".join(known or ["-"])] if known is not None else [])
    return [{"name": "probatorium cleanup", "hosts": ",".join(hosts), "gather_facts": False, "tasks": [
        report_task("stop recorded processes, remove run folders", argv, hostside_source())]}]
