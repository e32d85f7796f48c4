"""A Ray cluster of real `ray start` nodes on this machine, for tests/test_cluster.py and bench/bench_cluster.py.

Each node is a separate `ray start --block` in its own process group with its own temp dir and a custom
resource `<role>_node: 1`, so a trial's node id tells which node it ran on. Token authentication is on
(Ray's default for `ray start` since 2.59) with a token file of the cluster's own.

Never `ray stop` here: it stops every Ray process on the machine, other people's sweeps included. A node
is stopped by killing the process group started here, then any process still naming its temp dir.
"""

from __future__ import annotations

import ctypes
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psutil


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    # Should the test process itself be killed, `ray start --block` gets SIGKILL and its reaper stops the node.
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


@dataclass
class Node:
    role: str
    proc: subprocess.Popen
    temp_dir: Path

    def processes(self) -> list[psutil.Process]:
        """Every process that names this node's temp dir (raylet, GCS, workers...): ours by construction."""
        found = []
        for p in psutil.process_iter(["cmdline"]):
            try:
                if any(str(self.temp_dir) in arg for arg in p.info["cmdline"] or []):
                    found.append(p)
            except psutil.Error:
                continue
        return found

    def stop(self) -> None:
        """Kill the node the way a machine dies: everything at once, no goodbye to the cluster."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=30)
        for p in self.processes():  # anything that left the group (Ray starts some workers in new sessions)
            try:
                p.kill()
            except psutil.Error:
                pass
        deadline = time.monotonic() + 30
        while self.processes() and time.monotonic() < deadline:
            time.sleep(0.5)


@dataclass
class Cluster:
    address: str
    token_env: dict[str, str]  # what a driver needs to join: RAY_AUTH_MODE and the token file
    nodes: dict[str, Node]
    node_ids: dict[str, str] = field(default_factory=dict)  # role -> Ray node id

    def driver_env(self, base: dict[str, str], **extra: str) -> dict[str, str]:
        """`base` plus the token, and RAY_ADDRESS only when given in `extra`."""
        env = {k: v for k, v in base.items() if k != "RAY_ADDRESS"}
        return {**env, **self.token_env, **extra}


def _start_node(role: str, base: Path, env: dict[str, str], cpus: int, *args: str) -> Node:
    temp_dir = base / role / "ray"  # RAY_TMPDIR=base/role makes `--address auto` find this node
    temp_dir.mkdir(parents=True)
    with open(base / f"{role}.log", "w") as log:
        proc = subprocess.Popen(
            ["ray", "start", "--block", "--disable-usage-stats", f"--temp-dir={temp_dir}", f"--num-cpus={cpus}",
             "--object-store-memory=200000000", "--min-worker-port=0", "--max-worker-port=0",
             f"--dashboard-agent-listen-port={free_port()}", f"--resources={json.dumps({f'{role}_node': 1})}", *args],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_die_with_parent)
    return Node(role, proc, temp_dir)


def alive_nodes(address: str, env: dict[str, str], roles: list[str]) -> dict[str, str]:
    """role -> node id of the cluster's alive nodes, read through Ray itself ({} while it is not up)."""
    code = ("import json, ray; ray.init(address=%r, logging_level='ERROR'); print(json.dumps({r: n['NodeID'] "
            "for n in ray.nodes() if n['Alive'] for r in %r if r + '_node' in n['Resources']}))")
    try:
        proc = subprocess.run([sys.executable, "-c", code % (address, roles)], env=env, capture_output=True,
                              text=True, timeout=60)
    except subprocess.TimeoutExpired:
        return {}
    return json.loads(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 else {}


def _wait_for_port(port: int, node: Node, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while True:
        assert node.proc.poll() is None, f"the {node.role} node exited; see {node.temp_dir.parent.parent}"
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        assert time.monotonic() < deadline, f"the {node.role} node does not listen on {port}"
        time.sleep(1)


@contextmanager
def ray_cluster(cpus: dict[str, int]) -> Iterator[Cluster]:
    """Nodes by role -> logical CPUs; the first role is the head. Torn down in all cases, checked."""
    # Not under pytest's tmp_path: Ray's unix sockets live under the temp dir and their paths must stay
    # below 108 bytes.
    base = Path(tempfile.mkdtemp(prefix="raytest-", dir="/tmp"))
    (base / "token").write_text(secrets.token_hex(32))
    token_env = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(base / "token")}
    node_env = {k: v for k, v in {**os.environ, **token_env}.items() if k != "RAY_ADDRESS"}
    port = free_port()
    cluster = Cluster(f"127.0.0.1:{port}", token_env, {})
    roles = list(cpus)
    try:
        head = _start_node(roles[0], base, node_env, cpus[roles[0]], "--head", f"--port={port}",
                           "--include-dashboard=false", f"--dashboard-port={free_port()}")
        cluster.nodes[head.role] = head
        _wait_for_port(port, head)
        for role in roles[1:]:
            cluster.nodes[role] = _start_node(role, base, node_env, cpus[role], f"--address={cluster.address}")
        deadline = time.monotonic() + 240
        while len(cluster.node_ids) < len(roles):
            assert time.monotonic() < deadline, f"cluster did not come up: {cluster.node_ids}; see {base}/*.log"
            assert all(n.proc.poll() is None for n in cluster.nodes.values()), f"a node exited; see {base}/*.log"
            time.sleep(2)
            cluster.node_ids = alive_nodes(cluster.address, node_env, roles)
        yield cluster
    finally:
        for node in reversed(cluster.nodes.values()):
            node.stop()
        left = [p.pid for n in cluster.nodes.values() for p in n.processes()]
        if not left:
            shutil.rmtree(base, ignore_errors=True)
        assert not left, f"Ray processes of the test cluster survived: {left}"
