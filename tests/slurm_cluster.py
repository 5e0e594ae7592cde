"""A real single-node SLURM cluster for the tests: munged, MariaDB, slurmdbd, slurmctld and slurmd on
loopback, configured in a temporary folder, without systemd or cgroups.

``SlurmCluster.start()`` installs the Debian packages when ``slurmctld`` is absent (root and apt
needed; otherwise :class:`ClusterUnavailable` says why), writes ``slurm.conf`` with this machine's
hostname, CPU count and memory (``slurmd -C``), two partitions on the node (``cpu``, the default, and
``gpu``; the names workflow/profiles/slurm uses by default) and two fake GPU GRES, so that jobs asking
``--gpus=1`` are scheduled and accounted like on a real GPU node. Accounting goes through slurmdbd to
MariaDB, so ``sacct`` sees jobs finish (the executor plugin's default status command).

Every daemon is started by this module, in the foreground, and ``stop()`` ends them by their PIDs
(jobs first, with ``scancel``). Clients find the cluster through ``SLURM_CONF`` in ``cluster.env``.

Run by hand: ``python tests/slurm_cluster.py`` starts one, prints its environment, and stops it on
Enter.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

PACKAGES = ["slurm-wlm", "slurmdbd", "munge", "mariadb-server"]
CLUSTER_NAME = "healnet"
ACCOUNT = "healnet"
PARTITIONS = ("cpu", "gpu")
CLIENTS = ("srun", "sbatch", "squeue", "sacct", "scancel", "sinfo", "scontrol", "sacctmgr", "sshare", "salloc")


class ClusterUnavailable(RuntimeError):
    """SLURM is not installed and cannot be installed here (the tests skip with this reason)."""


def install() -> None:
    """apt-get install the SLURM, munge and MariaDB packages unless ``slurmctld`` is already there."""
    if shutil.which("slurmctld"):
        return
    if os.geteuid() != 0:
        raise ClusterUnavailable("slurmctld is not installed and installing it needs root")
    if not shutil.which("apt-get"):
        raise ClusterUnavailable("slurmctld is not installed and there is no apt-get to install it")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"],
                ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *PACKAGES]):
        run = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
        if run.returncode != 0:
            raise ClusterUnavailable(f"{' '.join(cmd)} failed: {(run.stderr or run.stdout).strip()[-500:]}")
    if not shutil.which("slurmctld"):
        raise ClusterUnavailable("apt-get installed the packages but slurmctld is still not on the PATH")


def _free_ports(n: int) -> list[int]:
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def _node() -> dict:
    """NodeName, CPUs, sockets/cores/threads and RealMemory as ``slurmd -C`` reports them."""
    out = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, check=True, timeout=30).stdout
    fields = dict(tok.split("=", 1) for tok in out.split("\n")[0].split() if "=" in tok)
    return {"name": socket.gethostname().split(".")[0], "cpus": int(fields["CPUs"]),
            "sockets": int(fields.get("SocketsPerBoard", 1)), "cores": int(fields.get("CoresPerSocket", 1)),
            "threads": int(fields.get("ThreadsPerCore", 1)), "memory": int(fields["RealMemory"])}


class SlurmCluster:
    def __init__(self, root: str | None = None):
        # short path: unix socket names are limited to 108 bytes
        self.root = Path(root or tempfile.mkdtemp(prefix="slurm-", dir="/tmp"))
        self.procs: dict[str, subprocess.Popen] = {}
        self.node: dict = {}
        self.env: dict = {}

    # -- helpers ---------------------------------------------------------------------------------
    def _spawn(self, name: str, cmd: list[str]) -> None:
        log = open(self.root / f"{name}.out", "ab")
        self.procs[name] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                            start_new_session=True, cwd=self.root)
        log.close()

    def _wait(self, what: str, check, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited ({proc.returncode}) while waiting for {what}:\n"
                                       + self.log_tail(name))
            if check():
                return
            time.sleep(0.25)
        raise RuntimeError(f"timed out waiting for {what}\n" + "\n".join(self.log_tail(n) for n in self.procs))

    def log_tail(self, name: str, n: int = 3000) -> str:
        texts = []
        for p in sorted(self.root.glob(f"{name}*")):
            if p.suffix in (".out", ".log") and p.is_file():
                texts.append(f"--- {p.name}\n{p.read_text(errors='replace')[-n:]}")
        return "\n".join(texts)

    def run(self, *cmd: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        res = subprocess.run(list(cmd), capture_output=True, text=True, env=self.env, timeout=timeout)
        if check and res.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({res.returncode}): {res.stderr or res.stdout}")
        return res

    def _ok(self, *cmd: str) -> bool:
        try:
            return subprocess.run(list(cmd), capture_output=True, env=self.env, timeout=15).returncode == 0
        except subprocess.TimeoutExpired:
            return False

    # -- configuration ---------------------------------------------------------------------------
    def _write_config(self) -> None:
        r = self.root
        for d in ("state", "spool", "db", "munge"):
            (r / d).mkdir(exist_ok=True)
        os.chmod(r, 0o755)
        os.chmod(r / "munge", 0o700)
        self.ctld_port, self.slurmd_port, self.dbd_port, self.db_port = _free_ports(4)
        n = self.node = _node()
        # a fraction of memory stays with the OS; slurmd refuses a node that reports less than configured
        self.node["memory"] = int(n["memory"] * 0.9)
        self.munge_socket = r / "munge" / "munge.sock"
        key = r / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        os.chmod(key, 0o400)
        auth = f"AuthInfo=socket={self.munge_socket}"
        # two fake GPUs (no device is touched: TaskPlugin=task/none, no cgroups)
        (r / "gres.conf").write_text("".join(f"NodeName={n['name']} Name=gpu Type=fake File={dev}\n"
                                             for dev in ("/dev/null", "/dev/zero")))
        (r / "slurm.conf").write_text(f"""\
ClusterName={CLUSTER_NAME}
SlurmctldHost={n['name']}(127.0.0.1)
SlurmctldPort={self.ctld_port}
SlurmdPort={self.slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
{auth}
CredType=cred/munge
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool
SlurmctldPidFile={r}/slurmctld.pid
SlurmdPidFile={r}/slurmd.pid
SlurmctldLogFile={r}/slurmctld.log
SlurmdLogFile={r}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=5
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2
MpiDefault=none
ReturnToService=2
MinJobAge=600
KillWait=5
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=30
GresTypes=gpu
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort={self.dbd_port}
AccountingStoragePass={self.munge_socket}
AccountingStorageTRES=gres/gpu
JobCompType=jobcomp/none
AccountingStoreFlags=job_comment
NodeName={n['name']} NodeAddr=127.0.0.1 CPUs={n['cpus']} Boards=1 SocketsPerBoard={n['sockets']} \
CoresPerSocket={n['cores']} ThreadsPerCore={n['threads']} RealMemory={n['memory']} Gres=gpu:fake:2 State=UNKNOWN
PartitionName={PARTITIONS[0]} Nodes={n['name']} Default=YES MaxTime=INFINITE State=UP
PartitionName={PARTITIONS[1]} Nodes={n['name']} Default=NO MaxTime=INFINITE State=UP
""")
        dbd = r / "slurmdbd.conf"
        dbd.write_text(f"""\
{auth}
AuthType=auth/munge
DbdHost={self.node['name']}
DbdAddr=127.0.0.1
DbdPort={self.dbd_port}
SlurmUser=root
PidFile={r}/slurmdbd.pid
LogFile={r}/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort={self.db_port}
StorageUser=root
StorageLoc=slurm_acct_db
""")
        os.chmod(dbd, 0o600)
        # Client wrappers that carry SLURM_CONF: snakemake-executor-plugin-slurm-jobstep (0.6) strips
        # every SLURM_* variable but the job's identity before its inner `srun`, so a plain
        # SLURM_CONF would not reach srun inside the job and srun would look for /etc/slurm.
        bindir = r / "bin"
        bindir.mkdir(exist_ok=True)
        for tool in CLIENTS:
            real = shutil.which(tool)
            if real:
                w = bindir / tool
                w.write_text(f'#!/bin/sh\nSLURM_CONF={r / "slurm.conf"} exec {real} "$@"\n')
                w.chmod(0o755)
        self.env = {**os.environ, "SLURM_CONF": str(r / "slurm.conf"),
                    "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}"}

    # -- life cycle ------------------------------------------------------------------------------
    def start(self) -> "SlurmCluster":
        install()
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        r = self.root
        self._write_config()
        # munged: its own socket, key and pid file; --force because /tmp is world-writable
        self._spawn("munged", ["munged", "--foreground", "--force", f"--socket={self.munge_socket}",
                               f"--key-file={r / 'munge' / 'munge.key'}", f"--pid-file={r / 'munge' / 'munged.pid'}",
                               f"--seed-file={r / 'munge' / 'munge.seed'}", f"--log-file={r / 'munged.log'}"])
        self._wait("munged", lambda: self.munge_socket.exists())
        # MariaDB on a loopback port; no grant tables (nothing but slurmdbd can reach it)
        install_db = shutil.which("mariadb-install-db") or shutil.which("mysql_install_db")
        subprocess.run([install_db, "--no-defaults", f"--datadir={r / 'db'}", "--user=root",
                        "--auth-root-authentication-method=normal", "--skip-test-db"],
                       capture_output=True, check=True, timeout=120, cwd=r)
        mariadbd = shutil.which("mariadbd") or shutil.which("mysqld") or "/usr/sbin/mariadbd"
        self._spawn("mariadb", [mariadbd, "--no-defaults", f"--datadir={r / 'db'}", "--user=root",
                                "--bind-address=127.0.0.1", f"--port={self.db_port}", f"--socket={r / 'db.sock'}",
                                f"--pid-file={r / 'mariadb.pid'}", "--skip-grant-tables", "--skip-name-resolve",
                                "--innodb-buffer-pool-size=64M", "--innodb-lock-wait-timeout=900", "--innodb-flush-log-at-trx-commit=0",
                                f"--log-error={r / 'mariadb.log'}"])
        self._wait("mariadb", lambda: (r / "db.sock").exists())
        self._spawn("slurmdbd", ["slurmdbd", "-D"])  # reads slurmdbd.conf beside $SLURM_CONF
        self._wait("slurmdbd", lambda: self._ok("sacctmgr", "-n", "list", "cluster"))
        self.run("sacctmgr", "-i", "add", "cluster", CLUSTER_NAME)
        self.run("sacctmgr", "-i", "add", "account", ACCOUNT, f"cluster={CLUSTER_NAME}")
        user = os.environ.get("USER") or "root"
        self.run("sacctmgr", "-i", "add", "user", user, f"account={ACCOUNT}", f"cluster={CLUSTER_NAME}")
        self._spawn("slurmctld", ["slurmctld", "-D", "-i", "-f", str(r / "slurm.conf")])
        self._wait("slurmctld", lambda: self._ok("scontrol", "ping"))
        self._spawn("slurmd", ["slurmd", "-D", "-f", str(r / "slurm.conf"), "-N", self.node["name"]])

        def node_up() -> bool:
            out = self.run("sinfo", "-h", "-N", "-o", "%T", check=False).stdout.split()
            return bool(out) and all(s.rstrip("*") in ("idle", "mixed", "allocated") for s in out)

        self._wait("the node to come up", node_up)

    def stop(self, remove: bool = True) -> None:
        """Cancel every job, then end the daemons this object started, by PID, in reverse order."""
        if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            try:
                self.run("scancel", "--full", "-u", os.environ.get("USER") or "root", check=False, timeout=15)
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline and self.run("squeue", "-h", check=False, timeout=15).stdout.strip():
                    time.sleep(0.5)
            except Exception:
                pass
        for name in reversed(list(self.procs)):
            proc = self.procs[name]
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for name in reversed(list(self.procs)):
            proc = self.procs[name]
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        self.procs.clear()
        if remove:
            shutil.rmtree(self.root, ignore_errors=True)

    def running(self) -> dict[str, int]:
        return {name: p.pid for name, p in self.procs.items() if p.poll() is None}

    def sacct(self, *fields: str) -> list[dict]:
        """Every job (allocation, not its steps) the cluster has accounted, as dicts of ``fields``."""
        fields = fields or ("JobID", "Comment", "Account", "Partition", "State", "ExitCode", "Elapsed", "AllocTRES")
        out = self.run("sacct", "-a", "-X", "-n", "-P", "-S", "2000-01-01", "-E", "now",
                       "--format=" + ",".join(fields)).stdout
        return [dict(zip(fields, line.split("|"))) for line in out.splitlines() if line.strip()]


if __name__ == "__main__":
    t0 = time.monotonic()
    cluster = SlurmCluster().start()
    print(f"cluster up in {time.monotonic() - t0:.1f} s: export SLURM_CONF={cluster.env['SLURM_CONF']}")
    print(cluster.run("sinfo").stdout)
    try:
        input("Enter stops it ")
    finally:
        cluster.stop()
