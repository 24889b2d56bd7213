"""Process plumbing for the benchmark: free ports, pinned processes, RSS, fds, CPU use, wrk.

Everything the benchmark starts goes through :class:`Processes`, which owns each child's
process group and kills every one of them on exit, on Ctrl-C and on errors, so a run never
leaves a server behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

HERE = Path(__file__).resolve().parent
HOST = "127.0.0.1"  # loopback only, always


def free_port() -> int:
    """A port the kernel just handed out on 127.0.0.1 (closed again for the server to take)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def nginx_binary() -> str:
    found = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(found).exists():
        raise SystemExit("nginx is missing: run scripts/bench-setup")
    return found


def require_tools() -> None:
    missing = [tool for tool in ("wrk", "taskset", "node") if shutil.which(tool) is None]
    nginx_binary()
    if missing:
        raise SystemExit(f"missing {', '.join(missing)}: run scripts/bench-setup")


@dataclass
class Proc:
    """One started server or client: its role, its pinning, its log."""

    name: str
    popen: subprocess.Popen[bytes]
    cpus: str
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def tree(self) -> list[int]:
        """This process and its descendants (nginx's workers, say)."""
        return [self.pid, *descendants(self.pid)]

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def descendants(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):
                text = Path(f"/proc/{pid}/task/{task}/children").read_text()
                for child in text.split():
                    found.append(int(child))
                    found.extend(descendants(int(child)))
    return found


def status_kb(pid: int, field_name: str) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    return 0


def peak_rss_mb(pids: Sequence[int]) -> float:
    """VmHWM summed over a process tree: the most memory it ever held resident."""
    return sum(status_kb(pid, "VmHWM") for pid in pids) / 1024


def reset_peak_rss(pids: Sequence[int]) -> None:
    """Restart VmHWM from the current RSS (``clear_refs`` 5, Linux >= 4.0)."""
    for pid in pids:
        with contextlib.suppress(OSError):
            Path(f"/proc/{pid}/clear_refs").write_text("5")


def open_fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def affinity(pid: int) -> str:
    try:
        return ",".join(str(c) for c in sorted(os.sched_getaffinity(pid)))
    except OSError:
        return "?"


class CpuMeter:
    """Busy share of each CPU between ``start`` and ``stop``, from /proc/stat."""

    @staticmethod
    def _sample() -> dict[str, tuple[int, int]]:
        out = {}
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith("cpu") and line[3:4].isdigit():
                name, *values = line.split()
                ticks = [int(v) for v in values]
                idle = ticks[3] + ticks[4]
                out[name] = (sum(ticks[:8]) - idle, sum(ticks[:8]))
        return out

    def __init__(self) -> None:
        self.before = self._sample()

    def busy(self) -> dict[str, float]:
        after = self._sample()
        result = {}
        for name, (busy, total) in after.items():
            busy0, total0 = self.before.get(name, (0, 0))
            result[name] = 100.0 * (busy - busy0) / max(1, total - total0)
        return result


@dataclass
class Processes:
    """Starts pinned children in their own process groups and always stops them."""

    workdir: Path
    started: list[Proc] = field(default_factory=list)

    def __post_init__(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    def start(
        self,
        name: str,
        argv: Sequence[str],
        cpus: str,
        *,
        port: int | None = None,
        env: dict[str, str] | None = None,
        ready_timeout: float = 30.0,
    ) -> Proc:
        """Run ``argv`` under ``taskset -c cpus``; wait until ``port`` accepts connections."""
        log = self.workdir / f"{name}.log"
        handle = log.open("ab")
        popen = subprocess.Popen(
            ["taskset", "-c", cpus, *argv],
            stdin=subprocess.DEVNULL,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own group: stopping it takes its children along
            env={**os.environ, **(env or {})},
        )
        handle.close()
        proc = Proc(name, popen, cpus, log)
        self.started.append(proc)
        if port is not None:
            self.wait_ready(proc, port, ready_timeout)
        return proc

    @staticmethod
    def wait_ready(proc: Proc, port: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.popen.poll() is not None:
                raise RuntimeError(
                    f"{proc.name} exited ({proc.popen.returncode}):\n{proc.log_tail()}"
                )
            with contextlib.suppress(OSError), socket.create_connection((HOST, port), 0.5):
                return
            time.sleep(0.05)
        raise RuntimeError(f"{proc.name} did not listen on {port} in {timeout} s")

    def stop(self, proc: Proc) -> None:
        """SIGTERM the process group, SIGKILL it if it lingers, reap it."""
        if proc in self.started:
            self.started.remove(proc)
        if proc.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.popen.wait(timeout=5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.popen.wait(timeout=5)
        # Children that outlived a dead leader (an nginx worker) are still in the group.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)

    def stop_all(self) -> None:
        for proc in reversed(list(self.started)):
            self.stop(proc)

    @contextlib.contextmanager
    def running(self, *args: Any, **kwargs: Any) -> Iterator[Proc]:
        proc = self.start(*args, **kwargs)
        try:
            yield proc
        finally:
            self.stop(proc)


WRK_LUA = HERE / "wrk_report.lua"


@dataclass
class WrkResult:
    requests: int
    duration_s: float
    bytes: int
    errors: int
    non_2xx: int
    p50_ms: float
    p99_ms: float
    cpu_busy: dict[str, float]
    peak_rss_mb: float = 0.0

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s

    @property
    def mb_per_s(self) -> float:
        return self.bytes / self.duration_s / 1e6

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "rps": self.rps, "mb_per_s": self.mb_per_s}


def run_wrk(
    url: str,
    *,
    connections: int,
    duration: float,
    cpus: str,
    headers: Sequence[str],
    threads: int = 1,
    log: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> WrkResult:
    """One wrk run, pinned; the Lua ``done`` hook prints exact counts and percentiles.

    ``env`` reaches the Lua script (``BENCH_USERS``/``BENCH_TOKEN``: rotate users)."""
    argv = [
        "taskset",
        "-c",
        cpus,
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{max(1, round(duration))}s",
        "--timeout",
        "30s",
        "--latency",
        "-s",
        str(WRK_LUA),
    ]
    for header in headers:
        argv += ["-H", header]
    argv.append(url)
    meter = CpuMeter()
    done = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=duration + 60,
        env={**os.environ, **env} if env else None,
    )
    busy = meter.busy()
    if log is not None:
        with log.open("a") as out:
            out.write(" ".join(argv) + "\n" + done.stdout + done.stderr + "\n")
    line = next((x for x in done.stdout.splitlines() if x.startswith("BENCH_JSON ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr or done.stdout}")
    data = json.loads(line.removeprefix("BENCH_JSON "))
    errors = sum(data[k] for k in ("connect", "read", "write", "timeout"))
    return WrkResult(
        requests=data["requests"],
        duration_s=data["duration_us"] / 1e6,
        bytes=data["bytes"],
        errors=errors,
        non_2xx=data["status"],
        p50_ms=data["p50_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        cpu_busy=busy,
    )


def versions() -> dict[str, str]:
    """What ran: the numbers mean little without the versions behind them."""

    def out(argv: list[str]) -> str:
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return "?"
        return (done.stdout + done.stderr).strip().splitlines()[0] if done else "?"

    import aiohttp

    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "python": sys.version.split()[0],
        "aiohttp": aiohttp.__version__,
        "node": out(["node", "--version"]),
        "nginx": out([nginx_binary(), "-v"]).removeprefix("nginx version: "),
        "wrk": " ".join(out(["wrk", "-v"]).split()[:2]),
        "kernel": os.uname().release,
        "cpu": cpu,
        "cpus": str(os.cpu_count()),
    }
