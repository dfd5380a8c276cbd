"""The subprocess runner against real child processes (python -c stubs; no llama.cpp needed)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from edgebench.errors import ProcError
from edgebench.runtime import proc
from edgebench.runtime.proc import ExitCause, classify_exit

PY = sys.executable


def test_ok_captures_output() -> None:
    r = proc.run([PY, "-c", "import sys; print('out'); print('err', file=sys.stderr)"])
    assert r.ok and r.returncode == 0
    assert r.stdout.strip() == "out" and r.stderr.strip() == "err"


def test_peak_rss_is_sampled() -> None:
    code = "import time; b = bytearray(80 * 2**20); b[::4096] = b'x' * len(b[::4096]); time.sleep(0.5)"
    r = proc.run([PY, "-c", code])
    assert r.ok
    assert 80 <= r.peak_rss_mib < 400
    assert 80 <= r.peak_anon_mib <= r.peak_rss_mib  # a bytearray is anonymous memory


def test_peak_rss_counts_children_that_start_later() -> None:
    # llama-server may fork helpers; the sampler rescans for children once a second
    child = "b = bytearray(120 * 2**20); b[::4096] = b'x' * len(b[::4096]); import time; time.sleep(2.5)"
    code = f"import subprocess, sys, time; time.sleep(0.3); subprocess.run([sys.executable, '-c', {child!r}])"
    r = proc.run([PY, "-c", code])
    assert r.ok
    assert r.peak_rss_mib >= 120 + 5  # the child's bytearray on top of two interpreters


def test_peak_anon_leaves_out_file_backed_pages(tmp_path: Path) -> None:
    # mmap-ed model weights are resident but file-backed: the kernel can drop them, not so the KV
    weights = tmp_path / "weights.bin"
    weights.write_bytes(b"\1" * (64 << 20))
    code = (
        f"import mmap, time; fh = open({str(weights)!r}, 'rb'); "
        "m = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ); "
        "s = sum(m[i] for i in range(0, len(m), 4096)); time.sleep(0.5)"
    )
    r = proc.run([PY, "-c", code])
    assert r.ok
    assert r.peak_rss_mib - r.peak_anon_mib >= 60
    assert r.peak_anon_mib < 60


def test_nonzero_exit_is_failed_with_last_line() -> None:
    r = proc.run([PY, "-c", "import sys; print('boom: model missing', file=sys.stderr); sys.exit(3)"])
    assert r.cause is ExitCause.FAILED and r.returncode == 3
    assert "boom: model missing" in r.detail


def test_timeout_kills_the_whole_group() -> None:
    # The child starts a grandchild that would outlive a plain kill of the child.
    code = (
        "import subprocess, sys, time; p = subprocess.Popen([sys.executable, '-c', "
        "'import time; time.sleep(60)']); print(p.pid, flush=True); time.sleep(60)"
    )
    t0 = time.monotonic()
    r = proc.run([PY, "-c", code], timeout_s=1.5)
    assert r.cause is ExitCause.TIMEOUT
    assert time.monotonic() - t0 < 20
    grandchild = int(r.stdout.split()[0])
    time.sleep(0.2)
    assert not psutil.pid_exists(grandchild) or psutil.Process(grandchild).status() == psutil.STATUS_ZOMBIE


def test_crash_with_signal() -> None:
    r = proc.run([PY, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"])
    assert r.cause is ExitCause.CRASH
    assert "SIGSEGV" in r.detail


def test_sigkill_from_outside_is_classified_as_oom() -> None:
    r = proc.run([PY, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"])
    assert r.cause is ExitCause.OOM
    assert "SIGKILL" in r.detail


def test_rss_watchdog_kills_over_budget() -> None:
    code = "import time; b = bytearray(400 * 2**20); b[::4096] = b'x' * len(b[::4096]); time.sleep(30)"
    r = proc.run([PY, "-c", code], rss_limit_mib=150, timeout_s=60)
    assert r.cause is ExitCause.RSS_LIMIT
    assert r.peak_rss_mib > 150
    assert r.wall_s < 30


def test_streaming_lines_and_log_file(tmp_path: Path) -> None:
    seen: list[str] = []
    log = tmp_path / "run.log"
    r = proc.run(
        [
            PY,
            "-c",
            "import sys\nfor i in range(3): print(f'[ {i}0%] step', flush=True)\n"
            "print('warn', file=sys.stderr)",
        ],
        on_line=seen.append,
        log_file=log,
    )
    assert r.ok
    assert seen[:3] == ["[ 00%] step", "[ 10%] step", "[ 20%] step"] and "warn" in seen
    assert "[ 20%] step" in log.read_text()


def test_streaming_timeout() -> None:
    r = proc.run(
        [PY, "-c", "import time; print('x', flush=True); time.sleep(60)"], timeout_s=1, on_line=lambda _: None
    )
    assert r.cause is ExitCause.TIMEOUT


def test_missing_binary_raises_one_clear_error() -> None:
    with pytest.raises(ProcError, match=r"/nonexistent/llama-bench: cannot start: not found"):
        proc.run(["/nonexistent/llama-bench"])


def test_kill_group_escalates_to_sigkill() -> None:
    p = proc.spawn(
        [
            PY,
            "-c",
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "print('ready', flush=True); time.sleep(60)",
        ]
    )
    assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    assert os.getpgid(p.pid) == p.pid != os.getpgid(os.getpid())  # it leads a group of its own
    t0 = time.monotonic()
    proc.kill_group(p, grace_s=0.5)
    assert p.returncode == -signal.SIGKILL
    p.stdout.close()
    assert p.stderr is not None
    p.stderr.close()
    assert time.monotonic() - t0 < 5


@pytest.mark.parametrize(
    ("stderr", "cause"),
    [
        ("error: invalid argument: --bogus", ExitCause.BAD_ARGS),
        ('error while handling argument "-ctv": invalid value', ExitCause.BAD_ARGS),
        ("ggml_backend_cpu_buffer_type_alloc_buffer: failed to allocate buffer of size 99999", ExitCause.OOM),
        ("terminate called after throwing an instance of 'std::bad_alloc'", ExitCause.OOM),
        ("llama_model_load: error loading model", ExitCause.FAILED),
    ],
)
def test_classify_from_stderr(stderr: str, cause: ExitCause) -> None:
    got, detail = classify_exit(1, stderr)
    assert got is cause
    assert detail


def test_classify_precedence() -> None:
    assert classify_exit(None, "", timed_out=True)[0] is ExitCause.TIMEOUT
    assert classify_exit(-9, "", rss_killed=True)[0] is ExitCause.RSS_LIMIT
    assert classify_exit(0, "error: invalid argument")[0] is ExitCause.OK
    assert classify_exit(-6, "GGML_ASSERT(x) failed")[0] is ExitCause.CRASH


def test_children_die_with_a_killed_parent() -> None:
    # edgebench killed with -9 must not leave a llama-server behind (it lives in its own session).
    code = (
        "import os, signal, sys, time\nfrom edgebench.runtime import proc\n"
        "p = proc.spawn([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "print(p.pid, flush=True)\ntime.sleep(0.3)\nos.kill(os.getpid(), signal.SIGKILL)\n"
    )
    r = proc.run([PY, "-c", code], timeout_s=30)
    child = int(r.stdout.split()[0])
    deadline = time.monotonic() + 5
    while psutil.pid_exists(child) and time.monotonic() < deadline:
        try:
            if psutil.Process(child).status() == psutil.STATUS_ZOMBIE:
                break
        except psutil.NoSuchProcess:
            break
        time.sleep(0.05)
    alive = psutil.pid_exists(child) and psutil.Process(child).status() != psutil.STATUS_ZOMBIE
    assert not alive


def test_a_slowed_sampler_samples_at_its_new_pace() -> None:
    """The gateway's long-lived servers are watched at 1 Hz once loaded: 20 Hz sampling (and a
    walk of /proc each second) is CPU taken from inference on a 2-core board."""

    class Counting(proc.RssSampler):
        calls = 0

        def sample(self) -> float:
            self.calls += 1
            return super().sample()

    # a limit keeps the 20 Hz pace (a watchdog does not back off while the RSS holds)
    fast, slow = Counting(os.getpid(), limit_mib=1e9).start(), Counting(os.getpid(), limit_mib=1e9)
    slow.slow_down(1.0, 30.0)
    slow.start()
    time.sleep(1.5)
    fast.stop(), slow.stop()
    assert fast.calls >= 10  # 20 Hz: ~30 in 1.5 s, however loaded the machine
    assert slow.calls <= 3  # the first sample, then one a second
    assert slow.peak_mib > 0


def test_without_a_limit_a_steady_process_is_sampled_ever_more_slowly() -> None:
    """A measured llama-bench holds its memory from load to exit: 20 Hz sampling of it is ~1 % of a
    core taken from the run on a 2-core host. With no limit to enforce, the pace slows to
    STEADY_INTERVAL_S while no new peak is made; a watchdog keeps its pace."""

    class Counting(proc.RssSampler):
        calls = 0

        def sample(self) -> float:
            self.calls += 1
            return super().sample()

    free, watched = Counting(os.getpid()).start(), Counting(os.getpid(), limit_mib=1e9).start()
    time.sleep(3.0)
    free.stop(), watched.stop()
    # backing off: 0.05, 0.075, ... then 0.8 s: ~9 samples in 3 s; at 20 Hz ~60
    assert free.calls <= 15
    assert watched.calls >= 25
    assert free.peak_mib > 0


_RISING = """
import time
blocks = []
time.sleep(2.0)                      # steady: the sampler backs off
for _ in range(12):                  # then climbs 25 MiB every 0.1 s, for 1.2 s
    blocks.append(bytearray(25 * 2**20))
    time.sleep(0.1)
time.sleep(0.25)                     # and holds its peak for 0.25 s: between two slow samples
"""


def test_a_new_peak_brings_back_the_fast_pace() -> None:
    """After a steady start the sampler waits 0.8 s between samples; a climbing RSS must be followed
    at 20 Hz again, so the peak is read (within one 25 MiB step), not a value from the climb's start."""
    p = subprocess.Popen([sys.executable, "-c", _RISING])
    s = proc.RssSampler(p.pid).start()
    base = s.peak_mib
    p.wait(timeout=30)
    s.stop()
    assert s.peak_mib - base >= 12 * 25 - 25 - 5  # ~300 MiB above the idle interpreter


_SPIKE = """
import sys, time
time.sleep(3.0)                      # steady: the sampler is at its slow pace
b = bytearray(int(sys.argv[1]) * 2**20)  # a spike, gone before the next slow sample
time.sleep(0.05)
del b
time.sleep(0.2)
"""


def test_a_spike_between_slow_samples_is_still_the_peak_through_the_kernels_high_water_mark() -> None:
    # the kernel's figure counts only above what this process held at the fork (a forked child
    # starts its high-water mark there): the spike is sized well above that
    spike = int(psutil.Process().memory_info().rss / 2**20) + 600
    res = proc.run([sys.executable, "-c", _SPIKE, str(spike)], timeout_s=30)
    assert res.ok
    assert res.peak_rss_mib >= spike


def _env_of(res: proc.ProcResult) -> dict[str, str]:
    return dict(line.split("=", 1) for line in res.stdout.split("\0") if "=" in line)


def test_a_measured_run_gets_the_users_environment_byte_for_byte() -> None:
    # one variable more (any name) cost llama-bench t1 pp512 3-5 % here: a measured run's
    # environment is the one the user would run llama.cpp with by hand, in the same order
    measured = proc.run(["/usr/bin/env", "-0"], timeout_s=30, measured=True)
    assert measured.ok
    assert measured.stdout == "".join(f"{k}={v}\0" for k, v in os.environ.items())
    other = proc.run(["/usr/bin/env", "-0"], timeout_s=30)  # a build, a probe: quiet aborts
    assert _env_of(other) == {"GGML_NO_BACKTRACE": "1", **os.environ}
    # what a caller sets is still passed to a measured run (a config's own variables)
    with_env = proc.run(["/usr/bin/env", "-0"], timeout_s=30, measured=True, env={"LLAMA_ARG_X": "1"})
    assert _env_of(with_env) == {**os.environ, "LLAMA_ARG_X": "1"}
