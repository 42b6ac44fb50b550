"""``archselect-cluster``: a throwaway local "cluster" for trying studies across workers, and for
the tests that do: a PostgreSQL server (the Optuna study storage) and an MLflow tracking server
on it that proxies the artifacts (``mlflow-artifacts:/``), so that workers share no disk.

    archselect-cluster up      start both (in ``runs/cluster``), print the two URLs
    archselect-cluster status  say whether they answer
    archselect-cluster down    stop both (the data stays in the folder; ``--purge`` removes it)

Both bind to 127.0.0.1 unless ``--host`` says otherwise (workers on other machines need an address
they can reach, and a firewall). PostgreSQL is Debian's (``apt-get install postgresql``; ``make
setup`` installs it where it runs as root); ``initdb`` refuses root, so as root the server runs
as the ``postgres`` user. Every password-free URL it prints trusts local connections only: this
is for trying things, not for production (use your own servers there; archselect only needs
their URLs).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import suppress
from dataclasses import asdict, dataclass
from pathlib import Path

#: the state file in the cluster's folder
STATE = "cluster.json"
#: the databases made on the server: the studies' and MLflow's
STUDIES_DB, MLFLOW_DB = "studies", "mlflow"


class ClusterError(Exception):
    """A cluster that cannot start or stop; the command prints it as one line."""


@dataclass
class Cluster:
    """A running cluster, as its state file records it."""

    folder: str
    host: str
    pg_port: int
    mlflow_port: int
    mlflow_pid: int
    pg_bin: str
    #: PostgreSQL's data and socket folder (in ``folder``, or in /tmp where the server's user
    #: cannot reach ``folder``, e.g. under /root)
    pg_dir: str = ""

    @property
    def storage(self) -> str:
        """The study storage URL (``search.storage=``)."""
        return f"postgresql://postgres@{self.host}:{self.pg_port}/{STUDIES_DB}"

    @property
    def tracking(self) -> str:
        """The tracking URL (``tracking.uri=``)."""
        return f"http://{self.host}:{self.mlflow_port}"

    @property
    def backend(self) -> str:
        """MLflow's own store, on the same PostgreSQL server."""
        return f"postgresql+psycopg://postgres@{self.host}:{self.pg_port}/{MLFLOW_DB}"

    def save(self) -> None:
        (Path(self.folder) / STATE).write_text(json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, folder: Path) -> Cluster | None:
        path = folder / STATE
        return cls(**json.loads(path.read_text())) if path.exists() else None


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def postgres_bin() -> Path:
    """The folder of Debian's PostgreSQL programs (the newest version installed)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"),
                   key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0)
    if found:
        return found[-1].parent
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).parent
    raise ClusterError("PostgreSQL is not installed (no initdb under /usr/lib/postgresql or on "
                       "PATH); fix: apt-get install postgresql (make setup does, as root)")


def _as_server_user(args: list[str]) -> subprocess.CompletedProcess[str]:
    """Run a PostgreSQL program; as root, as the ``postgres`` user (initdb refuses root)."""
    if os.geteuid() == 0:
        runuser = shutil.which("runuser")
        if runuser is None:
            raise ClusterError("running as root needs runuser to start PostgreSQL as the postgres "
                               "user; fix: apt-get install util-linux, or run as another user")
        args = [runuser, "-u", "postgres", "--", *args]
    return subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)


def _check(done: subprocess.CompletedProcess[str], what: str) -> None:
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["(no output)"]
        raise ClusterError(f"{what} failed: {tail[0]}")


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2):
            return True
    except OSError:
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def up(folder: Path, host: str = "127.0.0.1", pg_port: int | None = None,
       mlflow_port: int | None = None, wait: float = 120.0) -> Cluster:
    """Start PostgreSQL and an MLflow server in ``folder`` (or say they already run)."""
    folder = folder.expanduser().resolve()
    held = Cluster.load(folder)
    if held is not None and _alive(held.mlflow_pid) and _answers(held.tracking):
        return held
    folder.mkdir(parents=True, exist_ok=True)
    pg = postgres_bin()
    pg_dir = Path(held.pg_dir) if held is not None and held.pg_dir else _server_folder(folder)
    data = pg_dir / "data"
    if not (data / "PG_VERSION").exists():
        _check(_as_server_user([str(pg / "initdb"), "-D", str(data), "-A", "trust", "-E", "UTF8",
                                "--no-locale"]), "initdb")
    pg_port = pg_port or free_port(host)
    log = pg_dir / "postgres.log"
    _check(_as_server_user([str(pg / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-o",
                            f"-p {pg_port} -h {host} -k {pg_dir}", "start"]),
           f"starting PostgreSQL (pg_ctl start; its log: {log})")
    cluster = Cluster(folder=str(folder), host=host, pg_port=pg_port,
                      mlflow_port=mlflow_port or free_port(host), mlflow_pid=0, pg_bin=str(pg),
                      pg_dir=str(pg_dir))
    try:
        _create_databases(cluster)
        cluster.mlflow_pid = _start_mlflow(cluster, wait)
    except BaseException:
        _stop_postgres(cluster)
        raise
    cluster.save()
    return cluster


def _server_folder(folder: Path) -> Path:
    """Where PostgreSQL keeps its data: ``folder/postgres``; as root, owned by the ``postgres``
    user, and in /tmp when that user cannot reach ``folder`` (a folder under /root)."""
    pg_dir = folder / "postgres"
    if os.geteuid() != 0:
        pg_dir.mkdir(exist_ok=True)
        return pg_dir
    reach = _as_server_user(["test", "-x", str(folder)])
    if reach.returncode != 0:
        import tempfile

        pg_dir = Path(tempfile.mkdtemp(prefix="archselect-cluster-pg-"))
    pg_dir.mkdir(exist_ok=True)
    pg_dir.chmod(0o700)
    shutil.chown(pg_dir, "postgres", "postgres")
    return pg_dir


def _create_databases(cluster: Cluster) -> None:
    import psycopg

    with psycopg.connect(f"postgresql://postgres@{cluster.host}:{cluster.pg_port}/postgres",
                         autocommit=True) as conn:
        have = {r[0] for r in conn.execute("SELECT datname FROM pg_database")}
        for name in (STUDIES_DB, MLFLOW_DB):
            if name not in have:
                conn.execute(f'CREATE DATABASE "{name}"')


def _start_mlflow(cluster: Cluster, wait: float) -> int:
    folder = Path(cluster.folder)
    mlflow_cli = Path(sys.executable).with_name("mlflow")
    command = [str(mlflow_cli) if mlflow_cli.exists() else "mlflow", "server",
               "--backend-store-uri", cluster.backend, "--host", cluster.host,
               "--port", str(cluster.mlflow_port), "--workers", "2",
               "--artifacts-destination", str(folder / "artifacts")]
    if cluster.host != "127.0.0.1":  # MLflow refuses other Host headers unless told
        command += ["--allowed-hosts", "*"]
    log = (folder / "mlflow.log").open("a")
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=folder,
                              start_new_session=True,
                              env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true",
                                   "DO_NOT_TRACK": "true"})
    log.close()
    deadline = time.monotonic() + wait
    while not _answers(cluster.tracking):
        if server.poll() is not None or time.monotonic() > deadline:
            _kill_group(server.pid)
            tail = (folder / "mlflow.log").read_text().strip().splitlines()[-1:] or [""]
            raise ClusterError(f"the MLflow server did not start: {tail[0]} (its log: "
                               f"{folder / 'mlflow.log'})")
        time.sleep(0.5)
    return server.pid


def _kill_group(pid: int, wait: float = 30.0) -> None:
    """SIGTERM to the server's process group (it runs workers), SIGKILL if it lingers."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                os.killpg(pid, 0)
            except ProcessLookupError:
                return
            with suppress(ChildProcessError):  # our own child (started by this process)
                os.waitpid(pid, os.WNOHANG)
            time.sleep(0.2)


def _stop_postgres(cluster: Cluster) -> None:
    data = Path(cluster.pg_dir or Path(cluster.folder) / "postgres") / "data"
    _as_server_user([str(Path(cluster.pg_bin) / "pg_ctl"), "-D", str(data), "-m", "fast", "-w",
                     "stop"])


def down(folder: Path, purge: bool = False) -> bool:
    """Stop the cluster in ``folder``; False when none was running there."""
    folder = folder.expanduser().resolve()
    cluster = Cluster.load(folder)
    if cluster is None:
        if purge:  # stopped before: the folder goes all the same
            shutil.rmtree(folder, ignore_errors=True)
        return False
    if cluster.mlflow_pid:
        _kill_group(cluster.mlflow_pid)
    _stop_postgres(cluster)
    (folder / STATE).unlink(missing_ok=True)
    if purge:
        if cluster.pg_dir:
            shutil.rmtree(cluster.pg_dir, ignore_errors=True)
        shutil.rmtree(folder, ignore_errors=True)
    return True


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point."""
    parser = argparse.ArgumentParser(
        prog="archselect-cluster",
        description="A local PostgreSQL (study storage) and MLflow server (tracking, artifacts "
                    "proxied) for studies across worker processes or machines.")
    parser.add_argument("action", choices=["up", "status", "down"])
    parser.add_argument("--dir", default="runs/cluster", type=Path,
                        help="where the servers keep their data (default: runs/cluster)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="the address both servers bind to (default: 127.0.0.1)")
    parser.add_argument("--pg-port", type=int, default=None, help="default: a free port")
    parser.add_argument("--mlflow-port", type=int, default=None, help="default: a free port")
    parser.add_argument("--purge", action="store_true", help="down: also remove the folder")
    parser.add_argument("--json", action="store_true", help="up/status: print the URLs as JSON")
    args = parser.parse_args(argv)
    try:
        if args.action == "down":
            stopped = down(args.dir, purge=args.purge)
            print("stopped" if stopped else f"no cluster is running in {args.dir}")
            return 0
        if args.action == "status":
            cluster = Cluster.load(args.dir.expanduser().resolve())
            if cluster is None or not _answers(cluster.tracking):
                print(f"no cluster is running in {args.dir}")
                return 1
        else:
            cluster = up(args.dir, host=args.host, pg_port=args.pg_port,
                         mlflow_port=args.mlflow_port)
    except ClusterError as exc:
        print(f"archselect-cluster: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"storage": cluster.storage, "tracking": cluster.tracking,
                          "folder": cluster.folder}))
    else:
        print(f"study storage:  search.storage={cluster.storage}\n"
              f"tracking:       tracking.uri={cluster.tracking}\n"
              f"every worker:   archselect task=... search.storage={cluster.storage} "
              f"tracking.uri={cluster.tracking} search.study_name=<one name>\n"
              f"stop:           archselect-cluster down --dir {args.dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
