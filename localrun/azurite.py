"""Start and stop Azurite, the storage emulator, for tests and local runs.

Azure Functions Core Tools cannot be installed here, but the queues and tables the Function
App uses can be: Azurite comes from npm (pinned in package.json, installed by `npm ci`). This
module is the one place that knows how to launch it, so the test fixture, `.ci/run` and a
developer's shell start it the same way:

    python -m localrun.azurite start      # writes .run/azurite.pid and .run/azurite.env
    set -a; . .run/azurite.env; set +a    # AZURITE_CONNECTION_STRING=...
    python -m localrun.azurite env        # the running one's string (start's, or make run's)
    python -m localrun.azurite stop

Ports default to free ones picked at start, so a CI run never collides with an Azurite a
developer left running on the standard ports.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO

PROJECT_DIR = Path(__file__).resolve().parents[1]
AZURITE_BIN = Path("node_modules") / ".bin" / "azurite"

# The emulator's one account. Microsoft publishes this name and key in the Azurite and
# Storage Emulator documentation so that every tool can talk to every emulator: it is NOT a
# secret, grants nothing outside a local emulator, and is the only key Azurite accepts.
DEV_ACCOUNT_NAME = "devstoreaccount1"
DEV_ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="

DEFAULT_HOST = "127.0.0.1"
STANDARD_BLOB_PORT = 10000
STANDARD_QUEUE_PORT = 10001
STANDARD_TABLE_PORT = 10002
ENV_VAR = "AZURITE_CONNECTION_STRING"

# Auto-picked ports can be taken by someone else between our probe and Azurite's bind;
# a couple of fresh picks make that race irrelevant in practice.
_START_ATTEMPTS_WITH_FREE_PORTS = 3
_PR_SET_PDEATHSIG = 1


class AzuriteError(RuntimeError):
    """Azurite could not be installed, started or stopped; the message says what to do."""


def connection_string(
    *,
    host: str = DEFAULT_HOST,
    blob_port: int = STANDARD_BLOB_PORT,
    queue_port: int = STANDARD_QUEUE_PORT,
    table_port: int = STANDARD_TABLE_PORT,
) -> str:
    """The connection string of an Azurite on these ports (path-style URLs, as Azurite serves)."""
    return (
        "DefaultEndpointsProtocol=http;"
        f"AccountName={DEV_ACCOUNT_NAME};"
        f"AccountKey={DEV_ACCOUNT_KEY};"
        f"BlobEndpoint=http://{host}:{blob_port}/{DEV_ACCOUNT_NAME};"
        f"QueueEndpoint=http://{host}:{queue_port}/{DEV_ACCOUNT_NAME};"
        f"TableEndpoint=http://{host}:{table_port}/{DEV_ACCOUNT_NAME};"
    )


@dataclass
class AzuriteProcess:
    """A running Azurite. Stop it with `.stop()` or use it as a context manager."""

    process: subprocess.Popen[bytes]
    host: str
    blob_port: int
    queue_port: int
    table_port: int
    workdir: Path
    log_path: Path
    _log: IO[bytes] | None = field(default=None, repr=False)
    in_memory: bool = True

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def connection_string(self) -> str:
        return connection_string(
            host=self.host, blob_port=self.blob_port, queue_port=self.queue_port, table_port=self.table_port
        )

    def env_lines(self) -> list[str]:
        """`NAME=value` lines, shell-quoted so that `. file` and `eval` both read them back."""
        return [f"{ENV_VAR}={shlex.quote(self.connection_string)}", f"AZURITE_PID={self.pid}"]

    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self, *, timeout: float = 10.0) -> None:
        """Stop Azurite (SIGTERM, then SIGKILL after `timeout`); safe to call twice."""
        try:
            if self.process.poll() is None:
                _signal_group(self.process.pid, signal.SIGTERM)
                try:
                    self.process.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    _signal_group(self.process.pid, signal.SIGKILL)
                    self.process.wait(timeout=timeout)
        finally:
            if self._log is not None:
                self._log.close()
                self._log = None

    def kill(self, *, timeout: float = 10.0) -> None:
        """SIGKILL Azurite at once, as a crashed host would lose it (a reliability test's fault)."""
        try:
            if self.process.poll() is None:
                _signal_group(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=timeout)
        finally:
            if self._log is not None:
                self._log.close()
                self._log = None

    def restart(self, *, timeout: float = 30.0) -> AzuriteProcess:
        """A new Azurite on the same ports and location (stop or kill this one first).

        With data on disk (`in_memory=False` at start) the new one serves what the old one
        had written, so clients that keep their connection string carry on.
        """
        if self.running():
            raise AzuriteError(f"Azurite (pid {self.pid}) is still running; stop or kill it first")
        return start_azurite(workdir=self.workdir, blob_port=self.blob_port, queue_port=self.queue_port,
                             table_port=self.table_port, in_memory=self.in_memory, host=self.host,
                             timeout=timeout)

    def __enter__(self) -> AzuriteProcess:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def ensure_installed(project_dir: Path = PROJECT_DIR) -> Path:
    """Path of the Azurite launcher, running `npm ci` first when node_modules lacks it.

    package-lock.json pins the exact Azurite and every dependency, so `npm ci` gives every
    developer and CI the same emulator; the bin is checked, not the folder, because a
    half-finished install leaves node_modules without it.
    """
    binary = project_dir / AZURITE_BIN
    if binary.exists():
        return binary
    npm = shutil.which("npm")
    if npm is None:
        raise AzuriteError(
            f"{binary} is missing and npm is not on PATH: install Node.js 20 (with npm), "
            f"then run `npm ci` in {project_dir}"
        )
    print(f"Azurite is not installed; running npm ci in {project_dir} ...", file=sys.stderr)
    result = subprocess.run(  # noqa: S603 - fixed argv, no shell
        [npm, "ci", "--no-audit", "--no-fund"],
        cwd=project_dir,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    if result.returncode != 0 or not binary.exists():
        tail = (result.stdout + result.stderr).strip().splitlines()[-20:]
        raise AzuriteError(
            f"`npm ci` in {project_dir} failed (exit {result.returncode}); fix it and rerun:\n" + "\n".join(tail)
        )
    return binary


def start_azurite(
    *,
    workdir: Path,
    blob_port: int = 0,
    queue_port: int = 0,
    table_port: int = 0,
    in_memory: bool = True,
    host: str = DEFAULT_HOST,
    project_dir: Path = PROJECT_DIR,
    timeout: float = 30.0,
    detach: bool = False,
) -> AzuriteProcess:
    """Launch Azurite and return once all three services accept connections.

    `workdir` is Azurite's location (its log, and its data when not in memory). A port of 0
    means "pick a free one". `detach=True` is for the CLI: the emulator outlives this Python
    process and is stopped through its pid file. Otherwise it is tied to the calling thread on
    Linux, so a test run killed without its teardown does not leave an emulator behind.
    """
    binary = ensure_installed(project_dir)
    workdir.mkdir(parents=True, exist_ok=True)
    auto = 0 in (blob_port, queue_port, table_port)
    attempts = _START_ATTEMPTS_WITH_FREE_PORTS if auto else 1
    last_error: AzuriteError | None = None
    for _ in range(attempts):
        ports = _pick_ports(host, (blob_port, queue_port, table_port))
        try:
            return _launch(binary, workdir, host, ports, in_memory=in_memory, timeout=timeout, detach=detach)
        except _PortTaken as exc:
            last_error = AzuriteError(str(exc))
    assert last_error is not None
    raise last_error


class _PortTaken(AzuriteError):
    pass


def _launch(
    binary: Path,
    workdir: Path,
    host: str,
    ports: tuple[int, int, int],
    *,
    in_memory: bool,
    timeout: float,
    detach: bool,
) -> AzuriteProcess:
    blob, queue, table = ports
    argv = [
        str(binary),
        "--skipApiVersionCheck",  # the Python SDKs may speak a newer API version than this Azurite
        "--loose",
        "--silent",
        "--disableTelemetry",  # only loopback traffic here
        "--blobHost", host, "--blobPort", str(blob),
        "--queueHost", host, "--queuePort", str(queue),
        "--tableHost", host, "--tablePort", str(table),
    ]  # fmt: skip
    # Azurite refuses --location together with --inMemoryPersistence; in memory it is only cwd.
    argv[1:1] = ["--inMemoryPersistence"] if in_memory else ["--location", str(workdir)]
    log_path = workdir / "azurite.log"
    log = log_path.open("ab")
    preexec = None if detach else _die_with_parent()
    try:
        process = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
            argv,
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stop() signals the whole group
            preexec_fn=preexec,  # noqa: PLW1509 - only sets the parent-death signal
        )
    except OSError as exc:
        log.close()
        raise AzuriteError(f"cannot run {binary}: {exc}") from exc
    azurite = AzuriteProcess(process, host, blob, queue, table, workdir, log_path, log, in_memory=in_memory)
    if detach:
        log.close()
        azurite._log = None
    deadline = time.monotonic() + timeout
    pending = {blob, queue, table}
    while pending:
        if process.poll() is not None:
            azurite.stop()
            text = _tail(log_path)
            if "EADDRINUSE" in text:
                raise _PortTaken(f"a port of {sorted(ports)} is already in use:\n{text}")
            raise AzuriteError(f"Azurite exited with code {process.returncode} while starting:\n{text}")
        pending = {port for port in pending if not _accepts(host, port)}
        if pending and time.monotonic() > deadline:
            azurite.stop()
            raise AzuriteError(
                f"Azurite did not open ports {sorted(pending)} within {timeout:.0f}s:\n{_tail(log_path)}"
            )
        if pending:
            time.sleep(0.05)
    return azurite


def _pick_ports(host: str, wanted: tuple[int, int, int]) -> tuple[int, int, int]:
    # Keep every probe socket open until all are chosen, so the three ports differ.
    with contextlib.ExitStack() as stack:
        chosen: list[int] = []
        for port in wanted:
            if port:
                chosen.append(port)
                continue
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((host, 0))
            chosen.append(int(sock.getsockname()[1]))
    return chosen[0], chosen[1], chosen[2]


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _die_with_parent() -> Callable[[], None] | None:
    """A pre-exec hook asking Linux to SIGTERM the child when its parent thread dies."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        # Looked up before the fork: loading a library in the forked child can deadlock.
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None

    def hook() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM))

    return hook


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)


def _is_azurite(pid: int) -> bool:
    """Whether `pid` is a live Azurite, so a stale pid file never makes us signal a stranger."""
    proc = Path("/proc") / str(pid)
    if not proc.exists():
        if not Path("/proc").exists():  # not Linux: trust the pid file
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return False
            return True
        return False
    try:
        cmdline = (proc / "cmdline").read_bytes()
        state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z" and b"azurite" in cmdline


def stop_pid(pid: int, *, timeout: float = 10.0) -> bool:
    """Stop a detached Azurite by pid; False when it was not running."""
    if not _is_azurite(pid):
        return False
    _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _is_azurite(pid):
        if time.monotonic() > deadline:
            _signal_group(pid, signal.SIGKILL)
            break
        time.sleep(0.05)
    return True


def _read_pid(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None


def _cmd_start(args: argparse.Namespace) -> int:
    pidfile: Path = args.pidfile
    envfile: Path = args.envfile
    pid = _read_pid(pidfile)
    if pid is not None and _is_azurite(pid) and envfile.exists():
        print(f"Azurite is already running (pid {pid}).", file=sys.stderr)
        sys.stdout.write(envfile.read_text())
        return 0
    azurite = start_azurite(
        workdir=args.workdir,
        blob_port=args.blob_port,
        queue_port=args.queue_port,
        table_port=args.table_port,
        in_memory=not args.persist,
        host=args.host,
        timeout=args.timeout,
        detach=True,
    )
    text = "".join(line + "\n" for line in azurite.env_lines())
    for path, content in ((pidfile, f"{azurite.pid}\n"), (envfile, text)):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    print(f"Azurite started (pid {azurite.pid}, log {azurite.log_path}).", file=sys.stderr)
    sys.stdout.write(text)
    return 0


def _cmd_stop(args: argparse.Namespace) -> int:
    pidfile: Path = args.pidfile
    pid = _read_pid(pidfile)
    if pid is None:
        print(f"No Azurite pid in {pidfile}; nothing to stop.", file=sys.stderr)
        return 0
    stopped = stop_pid(pid, timeout=args.timeout)
    print(f"Azurite (pid {pid}) {'stopped' if stopped else 'was not running'}.", file=sys.stderr)
    pidfile.unlink(missing_ok=True)
    args.envfile.unlink(missing_ok=True)
    return 0


def _cmd_env(args: argparse.Namespace) -> int:
    if args.envfile is not None:
        if not args.envfile.exists():
            print(f"{args.envfile} does not exist: run `python -m localrun.azurite start` first.", file=sys.stderr)
            return 1
        sys.stdout.write(args.envfile.read_text())
        return 0
    if any(port is not None for port in (args.blob_port, args.queue_port, args.table_port)):
        # Ports given: the connection string for them, running or not (for a config file).
        value = connection_string(
            host=args.host, blob_port=args.blob_port or STANDARD_BLOB_PORT,
            queue_port=args.queue_port or STANDARD_QUEUE_PORT, table_port=args.table_port or STANDARD_TABLE_PORT,
        )
    else:
        value, source = running_connection_string(args.run_dir, host=args.host)
        print(f"Azurite from {source}.", file=sys.stderr)
    print(value if args.value else f"{ENV_VAR}={shlex.quote(value)}")
    return 0


def running_connection_string(run_dir: Path, *, host: str = DEFAULT_HOST) -> tuple[str, str]:
    """The connection string of the Azurite that is actually running, and where it was found.

    `make run` and `start` pick free ports, so the standard ones are only a last guess: first
    the env file of a detached `start` (`<run_dir>/azurite.env`), then the local stack's
    (`<run_dir>/local.env`, its AzureWebJobsStorage), then Azurite on the standard ports. A file
    whose queue and table ports nobody listens on is stale and is said to be, never printed.
    Raises AzuriteError saying what was looked at when no Azurite answers.
    """
    from shared.settings import SettingsError, read_env_file

    stale: list[str] = []
    for path, name in ((run_dir / "azurite.env", ENV_VAR), (run_dir / "local.env", "AzureWebJobsStorage")):
        try:
            value = read_env_file(path).get(name, "")
        except SettingsError as exc:
            raise AzuriteError(str(exc)) from exc
        if not value:
            continue
        ports = _service_ports(value)
        if ports and all(_accepts(h, p) for h, p in ports):
            return value, str(path)
        stale.append(f"{path} names {', '.join(f'{h}:{p}' for h, p in ports) or 'no queue or table endpoint'}")
    standard = connection_string(host=host)
    if all(_accepts(host, port) for port in (STANDARD_QUEUE_PORT, STANDARD_TABLE_PORT)):
        return standard, f"the standard ports on {host}"
    hint = ("start one with `make run` or `python -m localrun.azurite start`, or give its ports "
            "(--queue-port, --table-port, --blob-port)")
    if stale:
        raise AzuriteError(f"no running Azurite: {'; '.join(stale)}, where nothing listens (stale); {hint}")
    raise AzuriteError(f"no running Azurite found in {run_dir} or on the standard ports; {hint}")


def _service_ports(value: str) -> list[tuple[str, int]]:
    """(host, port) of the queue and table endpoints of a connection string."""
    from urllib.parse import urlsplit

    parts = dict(item.split("=", 1) for item in value.split(";") if "=" in item)
    found: list[tuple[str, int]] = []
    for key in ("QueueEndpoint", "TableEndpoint"):
        url = urlsplit(parts.get(key, ""))
        try:
            port = url.port
        except ValueError:
            port = None
        if url.hostname and port:
            found.append((url.hostname, port))
    return found


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m localrun.azurite", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    start = sub.add_parser("start", help="start a detached Azurite; print and write its env lines")
    start.add_argument("--workdir", type=Path, default=Path(".run/azurite"), help="Azurite's location and log")
    start.add_argument("--pidfile", type=Path, default=Path(".run/azurite.pid"))
    start.add_argument("--envfile", type=Path, default=Path(".run/azurite.env"))
    start.add_argument("--host", default=DEFAULT_HOST)
    for name in ("blob", "queue", "table"):
        start.add_argument(f"--{name}-port", type=int, default=0, help="0 (default) picks a free port")
    start.add_argument("--persist", action="store_true", help="keep data on disk in --workdir")
    start.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the ports")
    start.set_defaults(func=_cmd_start)

    stop = sub.add_parser("stop", help="stop the Azurite named in the pid file")
    stop.add_argument("--pidfile", type=Path, default=Path(".run/azurite.pid"))
    stop.add_argument("--envfile", type=Path, default=Path(".run/azurite.env"))
    stop.add_argument("--timeout", type=float, default=10.0)
    stop.set_defaults(func=_cmd_stop)

    env = sub.add_parser("env", help="print AZURITE_CONNECTION_STRING=... of the running Azurite (make run's "
                                     "or start's, found in --run-dir), or for given ports")
    env.add_argument("--envfile", type=Path, default=None, help="print this file written by start")
    env.add_argument("--run-dir", type=Path, default=Path(".run"),
                     help="where make run and start write their env files (default .run)")
    env.add_argument("--host", default=DEFAULT_HOST)
    for name, port in (("blob", STANDARD_BLOB_PORT), ("queue", STANDARD_QUEUE_PORT), ("table", STANDARD_TABLE_PORT)):
        env.add_argument(f"--{name}-port", type=int, default=None,
                         help=f"print the string for this port instead (others default to the standard, {port})")
    env.add_argument("--value", action="store_true", help="print only the connection string")
    env.set_defaults(func=_cmd_env)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except AzuriteError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
