"""Issue 10, runtime layer: timeouts through grandchildren, invalid llama-bench output, peak RSS of
short processes, control characters and lost causes in stored diagnostics, Ctrl-C.

The llama.cpp binaries here are fakes (tests/fake_llama.py, fake_* scripts in tmp_path): the tests
are about what edgebench does with what a binary does, not about llama.cpp.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from edgebench.host.probe import probe_host
from edgebench.measure.context import probe_context
from edgebench.measure.space import CpuSet, Point
from edgebench.measure.throughput import MeasureSettings, PointMeasurer
from edgebench.models.gguf import ModelInfo, read_model_info
from edgebench.runtime import proc
from edgebench.runtime.bench import InvalidOutput, parse_bench_json, run_bench
from edgebench.runtime.flags import BenchTest, RuntimeConfig
from edgebench.runtime.proc import ExitCause, classify_exit
from edgebench.store import Store
from edgebench.testing.synth import write_tiny_llama
from fake_llama import bench_row, dumps, fake_bin_dir, fake_runtime, python_script, write_script
from helpers import FIXTURES

PY = sys.executable
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
TEST = BenchTest(n_prompt=16, n_gen=0, depth=0, reps=2)


def _dead(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _wait_dead(pid: int, within_s: float = 5) -> bool:
    deadline = time.monotonic() + within_s
    while not _dead(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return _dead(pid)


# --- item 3: timeouts hold through grandchildren --------------------------------------------------


def test_grandchild_holding_the_pipes_does_not_outlive_the_run(tmp_path: Path) -> None:
    # The leader exits at once; before, communicate() waited for the backgrounded sleep (300 s).
    fake = write_script(tmp_path / "fake_llama_bench", "#!/bin/sh\nsleep 300 &\necho $!\necho '[]'\nexit 0\n")
    r = proc.run([str(fake)], timeout_s=20)
    assert r.ok and "[]" in r.stdout  # not a timeout: run() did not wait for the grandchild
    assert _wait_dead(int(r.stdout.split()[0]))


def test_grandchild_holding_the_pipes_merged_path(tmp_path: Path) -> None:
    fake = write_script(tmp_path / "fake_cmake", "#!/bin/sh\nsleep 300 &\necho $!\necho step\nexit 0\n")
    seen: list[str] = []
    r = proc.run([str(fake)], timeout_s=20, on_line=seen.append)
    assert r.ok and "step" in seen
    assert _wait_dead(int(seen[0]))


def test_timeout_holds_when_a_grandchild_left_the_group(tmp_path: Path) -> None:
    # A grandchild in a session of its own is out of reach of killpg, and it holds our pipes:
    # run() stops reading instead of waiting for it.
    fake = write_script(tmp_path / "fake_llama_bench", "#!/bin/sh\nsetsid sleep 300 &\necho $!\nsleep 300\n")
    t0 = time.monotonic()
    r = proc.run([str(fake)], timeout_s=3)
    try:
        assert time.monotonic() - t0 < 30
        assert r.cause is ExitCause.TIMEOUT
    finally:
        escaped = int(r.stdout.split()[0])
        os.kill(escaped, signal.SIGKILL)


def test_kill_group_signals_the_group_after_its_leader_exited() -> None:
    p = proc.spawn(["/bin/sh", "-c", "sleep 300 </dev/null >/dev/null 2>&1 & echo $!; exit 0"])
    assert p.stdout is not None and p.stderr is not None
    grandchild = int(p.stdout.readline())
    p.wait(timeout=10)
    proc.kill_group(p, grace_s=1)
    p.stdout.close()
    p.stderr.close()
    assert _wait_dead(grandchild)


# --- item 4: invalid llama-bench output is a failed row ------------------------------------------

_ROW = b'"n_prompt": 16, "n_gen": 0, "n_depth": 0, "stddev_ts": 0, '
_INVALID = {
    "nan": b"[{" + _ROW + b'"avg_ts": NaN, "samples_ts": [NaN, NaN]}]',
    "infinity": b"[{" + _ROW + b'"avg_ts": Infinity, "samples_ts": [Infinity, 1.0]}]',
    "1e400": b"[{" + _ROW + b'"avg_ts": 1e400, "samples_ts": [1e400, 1]}]',
    "negative": dumps([bench_row(samples=[-5.0, -6.0])]),
    "empty samples": dumps([bench_row(samples=[])]),
    "other test": dumps([bench_row(n_prompt=512)]),
    "other depth": dumps([bench_row(n_depth=4096)]),
    "deep nesting": b"[" * 100_000 + b"]" * 100_000,
}


@pytest.mark.parametrize("case", sorted(_INVALID))
def test_invalid_bench_output_is_a_failed_outcome(case: str, tmp_path: Path) -> None:
    rt = fake_runtime(fake_bin_dir(tmp_path, 'cat "$OUT"', stdout=_INVALID[case]))
    out = run_bench(rt, "/fake/model.gguf", RuntimeConfig(threads=1), TEST, timeout_s=20)
    assert out.status is ExitCause.INVALID_OUTPUT
    assert out.detail.startswith("invalid output: ") and not CONTROL.search(out.detail)
    assert out.runs == []


def test_valid_fake_bench_output_is_accepted(tmp_path: Path) -> None:
    # The control for the case above: the fake's format is what edgebench reads.
    rt = fake_runtime(fake_bin_dir(tmp_path, 'cat "$OUT"', stdout=dumps([bench_row()])))
    out = run_bench(rt, "/fake/model.gguf", RuntimeConfig(threads=1), TEST, timeout_s=20)
    assert out.status is ExitCause.OK, out.detail
    assert out.runs[0].samples_ts == [100.0, 102.0]


def test_parse_rejects_non_finite_values_anywhere_in_the_row() -> None:
    with pytest.raises(InvalidOutput, match="NaN"):
        parse_bench_json(
            '[{"n_prompt": 16, "n_gen": 0, "n_depth": 0, "avg_ts": 1, "stddev_ts": 0,'
            ' "samples_ts": [1, 1], "stddev_ns": NaN}]',
            TEST,
        )


def _model(tmp_path: Path, name: str = "tiny") -> ModelInfo:
    info = read_model_info(write_tiny_llama(tmp_path / f"{name}.gguf"))
    return info.model_copy(update={"name": name})


def _strict_json(text: str) -> object:
    def refuse(const: str) -> object:
        raise ValueError(f"not JSON: {const}")

    return json.loads(text, parse_constant=refuse)


def test_invalid_output_through_the_measurer_is_a_stored_row_of_valid_json(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.sqlite")
    rt = fake_runtime(fake_bin_dir(tmp_path / "bin", 'cat "$OUT"', stdout=_INVALID["nan"]))
    host = probe_host(FIXTURES / "sysfs" / "rpi5")
    m = PointMeasurer(store, rt, host, _model(tmp_path), MeasureSettings(timeout_s=20))
    point = Point(threads=1, kv="f16", fa="off", ubatch=512, cpus=CpuSet(name="all", cpus=None))
    res = m.measure(point, TEST)
    assert res.status == "invalid-output" and res.cause.startswith("invalid output: ")
    (record,) = [r[0] for r in sqlite3.connect(tmp_path / "s.sqlite").execute("SELECT record FROM results")]
    assert _strict_json(record)


# --- item 5: peak RSS of a short process ----------------------------------------------------------


def test_peak_rss_of_a_short_process_comes_from_the_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    # The sampler sees the process once, at its start; the 100 MiB it then touches and frees
    # within milliseconds only the kernel's accounting (wait4's ru_maxrss) can report.
    # It must hold more than the parent (see the next test): 100 MiB above what this process holds.
    monkeypatch.setattr(proc, "SAMPLE_INTERVAL_S", 3600.0)
    mib = int(psutil.Process().memory_info().rss / 2**20) + 100
    r = proc.run([PY, "-c", f"b = bytearray({mib} * 2**20); b[::4096] = b'x' * len(b[::4096])"])
    assert r.ok and r.returncode == 0
    assert r.peak_rss_mib >= mib


def test_a_small_child_of_a_big_parent_does_not_inherit_its_peak() -> None:
    # Linux starts a forked child's ru_maxrss at the parent's RSS: a 10 MiB child of a 400 MiB
    # parent read "400 MiB" (the race's memory tie-break then saw every config alike).
    ballast = bytearray(400 * 2**20)
    ballast[::4096] = b"x" * len(ballast[::4096])
    r = proc.run(
        [
            PY,
            "-c",
            "import time; b = bytearray(30 * 2**20); b[::4096] = b'x' * len(b[::4096]); time.sleep(0.5)",
        ]
    )
    assert r.ok
    assert 30 <= r.peak_rss_mib < 200, r.peak_rss_mib
    del ballast


def test_exit_status_is_kept_when_we_reap_the_child() -> None:
    r = proc.run([PY, "-c", "import sys; sys.exit(7)"])
    assert r.returncode == 7 and r.cause is ExitCause.FAILED
    r = proc.run([PY, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"])
    assert r.returncode == -signal.SIGSEGV and r.cause is ExitCause.CRASH


# --- item 8: control characters from llama.cpp's stderr -------------------------------------------


@pytest.mark.parametrize(
    ("returncode", "stderr"),
    [
        (1, "\x1b[31merror: boom\x1b[0m\r\n\x07tail\x1b]0;title\x07"),
        (-11, "\x1b[1mlast words\x1b[0m\x00\x08"),
        (1, "\x1b[31mggml: failed to allocate buffer\x1b[0m\x1b[2J"),
        (1, "error: invalid argument: \x1b[31m--bogus\x1b[0m\x1b[H"),
    ],
)
def test_classify_exit_detail_has_no_control_characters(returncode: int, stderr: str) -> None:
    _, detail = classify_exit(returncode, stderr)
    assert detail and not CONTROL.search(detail)
    assert "\\x1b" not in detail and "[31m" not in detail  # escapes removed whole, not escaped


def test_bench_failure_detail_from_stderr_is_one_clean_line(tmp_path: Path) -> None:
    bench = "printf '\\033[31mllama_model_load: error loading model: bad\\033[0m\\r\\n\\033[2J' >&2; exit 1"
    rt = fake_runtime(fake_bin_dir(tmp_path, bench))
    out = run_bench(rt, "/fake/model.gguf", RuntimeConfig(threads=1), TEST, timeout_s=20)
    assert out.status is ExitCause.FAILED
    assert "error loading model: bad" in out.detail and not CONTROL.search(out.detail)


# --- item 10: diagnostics that keep the cause -----------------------------------------------------

GDB_ABORT = """\
/src/ggml/src/ggml.c:1742: GGML_ASSERT(ggml_can_repeat(b, a)) failed
[New LWP 12346]
[New LWP 12347]
[Thread debugging using libthread_db enabled]
Using host libthread_db library "/lib/x86_64-linux-gnu/libthread_db.so.1".
0x00007f1c2d8ea42f in __GI___wait4 (pid=12348, options=0) at ../sysdeps/unix/sysv/linux/wait4.c:30
30\t../sysdeps/unix/sysv/linux/wait4.c: No such file or directory.
#0  0x00007f1c2d8ea42f in __GI___wait4 () at ../sysdeps/unix/sysv/linux/wait4.c:30
#1  0x00007f1c2de4b1e0 in ggml_abort () from libggml-base.so
[Inferior 1 (process 12345) detached]
../csu/libc-start.c: No such file or directory.
"""

LOAD_FAILURE = (
    (
        "llama_model_loader: - kv   0:                       general.architecture str              = llama\n"
        "llama_model_load: error loading model: error loading model hyperparameters: "
        "key llama.feed_forward_length has wrong type u64 but expected type u32\n"
    )
    + """\
llama_model_load_from_file_impl: failed to load model
common_init_from_params: failed to load model '/m/tiny.gguf'
srv    load_model: failed to load model, '/m/tiny.gguf'
srv   operator(): operator(): cleaning up before exit...
main: exiting due to model loading error
"""
)


def test_abort_keeps_the_assert_not_gdb_noise() -> None:
    cause, detail = classify_exit(-6, GDB_ABORT)
    assert cause is ExitCause.CRASH
    assert "GGML_ASSERT(ggml_can_repeat(b, a)) failed" in detail
    assert "Inferior" not in detail and "csu" not in detail
    cause, detail = classify_exit(134, GDB_ABORT)  # via a shell: 128 + SIGABRT
    assert "GGML_ASSERT" in detail


def test_ggml_abort_message_beats_the_backtrace() -> None:
    text = "/src/ggml/src/ggml-cpu/ops.cpp:4321: fatal error\n" + GDB_ABORT.split("\n", 1)[1]
    _, detail = classify_exit(-6, text)
    assert "ops.cpp:4321: fatal error" in detail


def test_exception_keeps_what() -> None:
    text = "terminate called after throwing an instance of 'std::runtime_error'\n  what():  bad tensor\n"
    _, detail = classify_exit(-6, text)
    assert "bad tensor" in detail


def test_load_failure_keeps_llama_cpp_reason() -> None:
    cause, detail = classify_exit(1, LOAD_FAILURE)
    assert cause is ExitCause.FAILED
    assert "key llama.feed_forward_length has wrong type u64" in detail


def _fake_failing_server(root: Path) -> Path:
    log_line = LOAD_FAILURE.replace("'", "")
    server = f"""#!/bin/sh
echo "version: 1 (fake000)" >&2
printf '%s' '{log_line}' >&2
exit 1
"""
    return fake_bin_dir(root, "exit 1", server_sh=server)


def test_context_load_failure_stores_the_reason_and_logs_per_model_file(tmp_path: Path) -> None:
    rt = fake_runtime(_fake_failing_server(tmp_path / "bin"))
    store = Store(tmp_path / "s.sqlite")
    host = probe_host(FIXTURES / "sysfs" / "rpi5")
    a = _model(tmp_path, "twin")
    b = read_model_info(write_tiny_llama(tmp_path / "other.gguf", seed=1)).model_copy(update={"name": "twin"})
    assert a.sha256 != b.sha256
    logs = tmp_path / "logs"
    for m in (a, b):
        probe = probe_context(
            store, rt, host, m, RuntimeConfig(threads=1), budget_mib=4096, log_dir=logs, ctx_list=[256]
        )
        (trial,) = probe.trials
        assert trial.failed_step == "load"
        assert "key llama.feed_forward_length has wrong type u64" in trial.cause
    names = sorted(p.name for p in logs.iterdir())
    assert len(names) == 2, names  # one log per model file, though the names are equal
    assert all(n.startswith(("context-" + a.sha256[:12], "context-" + b.sha256[:12])) for n in names)


# --- item 10: Ctrl-C --------------------------------------------------------------------------------

_SLOW_AFTER_FIRST = r"""
import json, os, sys, time
a = sys.argv[1:]
if "-p" not in a:  # --help, from locate
    sys.exit(0)
g = lambda k: int(a[a.index(k) + 1])
d = os.environ["FAKE_DIR"]
cnt = os.path.join(d, "count")
n = int(open(cnt).read()) if os.path.exists(cnt) else 0
open(cnt, "w").write(str(n + 1))
if n >= 3:  # the first point's three processes answer; the next one hangs
    open(os.path.join(d, "slow"), "w").write(str(os.getpid()))
    time.sleep(120)
row = {"n_prompt": g("-p"), "n_gen": g("-n"), "n_depth": g("-d"), "avg_ts": 100.0, "stddev_ts": 1.0,
       "samples_ts": [100.0 + i for i in range(g("-r"))]}
print(json.dumps([row]))
"""


def test_ctrl_c_prints_one_line_exits_130_and_keeps_results(tmp_path: Path) -> None:
    bd = fake_bin_dir(tmp_path / "bin", python_script(_SLOW_AFTER_FIRST))
    model = write_tiny_llama(tmp_path / "tiny.gguf")
    conf = tmp_path / "edgebench.toml"
    conf.write_text(f'data_dir = "{tmp_path / "data"}"\n[llama_cpp]\nbin_dir = "{bd}"\n')
    env = {**os.environ, "EDGEBENCH_CONFIG": str(conf), "FAKE_DIR": str(tmp_path)}
    argv = [PY, "-m", "edgebench", "sweep", str(model), "--threads", "1", "--kv", "f16", "--fa", "off"]
    argv += ["--no-server-check", "--timeout", "200", "-p", "16", "-n", "4"]
    p = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "slow").exists() and p.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert p.poll() is None, p.communicate()
        time.sleep(0.3)
        p.send_signal(signal.SIGINT)  # as the terminal does (llama-bench is in its own session)
        _, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate()
    assert p.returncode == 130
    # the last line is the one error line (a notice such as "no thermal sensors" may come before)
    lines = err.strip().splitlines()
    assert lines[-1] == "edgebench: error: interrupted" and "Traceback" not in err
    assert _wait_dead(int((tmp_path / "slow").read_text()))  # the hanging llama-bench went with it
    store = Store(tmp_path / "data" / "edgebench.sqlite")
    assert store.count("throughput") == 1  # the point measured before the interrupt is kept
    assert not math.isnan(next(iter(store.rows("throughput"))).record["mean_ts"])


def test_llama_bench_is_measured_in_the_users_environment(tmp_path: Path) -> None:
    # edgebench's figure must be the one the user gets by hand: its llama-bench has no variable
    # of ours (GGML_NO_BACKTRACE moved speed by its mere size), unlike builds and probes
    seen = tmp_path / "env.txt"
    rt = fake_runtime(fake_bin_dir(tmp_path, f'env -0 > {seen}\ncat "$OUT"', stdout=dumps([bench_row()])))
    out = run_bench(rt, "/fake/model.gguf", RuntimeConfig(threads=1), TEST, timeout_s=20)
    assert out.status is ExitCause.OK, out.detail
    env = dict(kv.split("=", 1) for kv in seen.read_text().split("\0") if "=" in kv)
    assert "GGML_NO_BACKTRACE" not in env and env.get("PATH") == os.environ["PATH"]
