"""The code sandbox as a boundary: each escape a model's code could try, shown contained.

Every escape test is written so that the escape, if it worked, would show up outside the sandbox
(a file on the host, a connection accepted by the test, a process left running, a secret in the
verdict) or as a passing verdict for wrong code. The tests need bubblewrap (`apt-get install
bubblewrap`; the Makefile's set-up installs it); without it they fail, unless EDGEBENCH_NO_BWRAP=1
says explicitly that this machine has no bwrap, and then only the bwrap-dependent ones are skipped.
"""

from __future__ import annotations

import json
import os
import re
import resource
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from pydantic import TypeAdapter

from edgebench.backends.base import Backend, ChatRequest, ChatResponse
from edgebench.quality import FailureClass, ModelOutput, ValidatorSpec, Verdict, validate

F = FailureClass
SPEC = TypeAdapter(ValidatorSpec)
NO_BWRAP = os.environ.get("EDGEBENCH_NO_BWRAP") == "1"


def no_bwrap_needed(fn: Any) -> Any:
    fn.no_bwrap_needed = True
    return fn


@pytest.fixture(autouse=True)
def _bwrap_present(request: pytest.FixtureRequest) -> None:
    if getattr(request.function, "no_bwrap_needed", False):
        return
    if shutil.which("bwrap") is None:
        if NO_BWRAP:
            pytest.skip("EDGEBENCH_NO_BWRAP=1: this machine has no bubblewrap")
        pytest.fail(
            "bubblewrap (bwrap) is not installed: `apt-get install bubblewrap` (or EDGEBENCH_NO_BWRAP=1)"
        )


def grade(code: str, entry: str, tests: list[str], **spec: Any) -> Verdict:
    data = {"kind": "code", "entry": entry, "tests": tests, "timeout_s": 8, **spec}
    reply = f"Here is the function:\n\n```python\n{textwrap.dedent(code).strip()}\n```\n"
    return validate(ModelOutput(content=reply), SPEC.validate_python(data))


ADD_TESTS = ["assert add(2, 3) == 5", "assert add(10, -4) == 6"]
WRONG_ADD = "def add(a, b):\n    return 0\n"

# `_posixsubprocess.fork_exec` has no audit event: the way past an audit-hook "sandbox". Python 3.11's
# argument order (Lib/subprocess.py); the child's stdout/stderr go to /dev/null so that nothing
# holds the harness's pipes open.
FORK_EXEC = """
import os, _posixsubprocess
def spawn(argv, setsid=False):
    er, ew = os.pipe()
    null = os.open("/dev/null", os.O_RDWR)
    try:
        return _posixsubprocess.fork_exec(
            [os.fsencode(a) for a in argv], [os.fsencode(argv[0])], True, (ew,), None, None,
            -1, -1, -1, null, -1, null, er, ew, True, setsid, -1, None, None, None, -1, None, False)
    finally:
        for fd in (er, ew, null):
            os.close(fd)
"""


# The old harness kept its state in __main__, next to the model's code.
HARNESS = "import sys\ntry:\n    sys.modules['__main__'].{}\nexcept AttributeError:\n    pass\n"

# --- forging the verdict -------------------------------------------------------------------------

FORGERIES = {
    "call the harness's finish function": WRONG_ADD + HARNESS.format("_finish('passed')"),
    "clear the hidden test list": WRONG_ADD + HARNESS.format("_job['tests'].clear()"),
    "write the result file and exit": WRONG_ADD
    + textwrap.dedent("""
        import glob, json, os
        for path in ['result.json', 'results.json', *glob.glob('/out/*'), *glob.glob('/tmp/*')]:
            try:
                with open(path, 'w') as f:
                    f.write(json.dumps({'status': 'passed', 'detail': ''}))
            except OSError:
                pass
        os._exit(0)
        """),
    "print a success verdict and exit": WRONG_ADD
    + "import os\nos.write(1, b'{\"status\": \"passed\"}\\n')\nos.write(2, b'passed\\n')\nos._exit(0)\n",
    "patch AssertionError away": WRONG_ADD
    + "import builtins\nclass _Never(Exception):\n    pass\nbuiltins.AssertionError = _Never\n",
}


@pytest.mark.parametrize("how", list(FORGERIES))
def test_the_verdict_cannot_be_forged(how: str) -> None:
    verdict = grade(FORGERIES[how], "add", ADD_TESTS)
    assert not verdict.passed, how


def test_the_hidden_tests_cannot_be_read() -> None:
    # The expected value appears nowhere in the sandbox: not in a job file, argv, environ or cwd.
    code = r"""
        import os, re
        NEEDLE = re.compile(rb'==\s*(9182736\d\d)')
        def _scan(path):
            try:
                with open(path, 'rb') as f:
                    m = NEEDLE.search(f.read(1 << 20))
            except OSError:
                return None
            return int(m.group(1)) if m else None
        def secret(x):
            places = ['/proc/%s/%s' % (p, w) for p in ['self', os.getppid(), *os.listdir('/proc')]
                      for w in ('cmdline', 'environ')]
            for top in ('.', '/tmp', '/out', '/job', '/run', os.path.dirname(os.path.abspath(__file__))
                        if '__file__' in globals() else '.'):
                for root, _, files in os.walk(top):
                    places += [os.path.join(root, f) for f in files]
            for path in places:
                found = _scan(path)
                if found:
                    return found
            return -1
        """
    verdict = grade(code, "secret", ["assert secret(7) == 918273645"])
    assert not verdict.passed, verdict.detail


# --- objects that lie ----------------------------------------------------------------------------


def test_an_always_equal_object_does_not_pass() -> None:
    code = """
        class Anything:
            def __eq__(self, other): return True
            def __ne__(self, other): return False
            def __lt__(self, other): return True
            def __gt__(self, other): return True
            def __sub__(self, other): return self
            def __abs__(self): return self
            def __bool__(self): return True
            def __hash__(self): return 0
        def add(a, b):
            return Anything()
        """
    verdict = grade(code, "add", ADD_TESTS)
    assert not verdict.passed
    fahrenheit = grade(
        code.replace("def add(a, b)", "def to_f(c)"), "to_f", ["assert abs(to_f(0) - 32) < 1e-9"]
    )
    assert not fahrenheit.passed


def test_an_int_subclass_is_compared_by_its_value() -> None:
    code = """
        class Lying(int):
            def __eq__(self, other): return True
            __hash__ = int.__hash__
        def add(a, b):
            return Lying(0)
        """
    assert not grade(code, "add", ADD_TESTS).passed
    honest = "class Plain(int):\n    pass\ndef add(a, b):\n    return Plain(a + b)\n"
    assert grade(honest, "add", ADD_TESTS).passed  # a subclass with the right value is the right value


FAHRENHEIT_TESTS = ["assert abs(to_f(100) - 212) < 1e-9", "assert abs(to_f(-40) + 40) < 1e-9"]
SHADOWS = {
    "module-level abs": ("def to_f(c):\n    return c * 9 // 5 + 31\nabs = lambda x: 0\n", FAHRENHEIT_TESTS),
    "builtins.abs": (
        "import builtins\ndef to_f(c):\n    return c * 9 // 5 + 31\nbuiltins.abs = lambda x: 0\n",
        FAHRENHEIT_TESTS,
    ),
    "module-level len": (
        "def fizzbuzz(n):\n    return []\nlen = lambda x: 30\n",
        ["assert len(fizzbuzz(30)) == 30"],
    ),
    "builtins.sorted": (
        "import builtins\ndef unique(xs):\n    return xs\nbuiltins.sorted = lambda x: [1, 2]\n",
        ["assert sorted(unique([2, 1, 2])) == [1, 2]"],
    ),
}


@pytest.mark.parametrize("how", list(SHADOWS))
def test_shadowing_a_builtin_the_tests_call_does_not_pass(how: str) -> None:
    code, tests = SHADOWS[how]
    entry = re.search(r"def (\w+)", code).group(1)  # type: ignore[union-attr]
    verdict = grade(code, entry, tests)
    assert not verdict.passed, how


# --- the operating system ------------------------------------------------------------------------


def test_fork_exec_of_a_shell_cannot_touch_the_host(tmp_path: Path) -> None:
    marker = tmp_path / "shell-ran"
    code = (
        FORK_EXEC
        + f"""
import os
def add(a, b):
    pid = spawn(['/bin/sh', '-c', 'id -u > {marker}; echo owned > /root/edgebench-sh-{marker.parent.name}'])
    os.waitpid(pid, 0)
    return a + b
"""
    )
    try:
        verdict = grade(code, "add", ADD_TESTS)
        assert not marker.exists(), f"the shell wrote {marker}: {marker.read_text()!r}"
        assert not Path(f"/root/edgebench-sh-{marker.parent.name}").exists()
    finally:
        Path(f"/root/edgebench-sh-{marker.parent.name}").unlink(missing_ok=True)
    assert verdict.passed, verdict.detail  # the function itself is right; the shell achieved nothing


def test_no_network_from_the_code_or_its_children() -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.setblocking(False)
    port = server.getsockname()[1]
    code = (
        FORK_EXEC
        + f"""
import os, sys, socket
def add(a, b):
    try:
        socket.create_connection(('127.0.0.1', {port}), timeout=2).sendall(b'direct')
    except Exception:
        pass
    child = "import socket; socket.create_connection(('127.0.0.1', {port}), timeout=2).sendall(b'child')"
    try:
        os.waitpid(spawn([sys.executable, '-c', child]), 0)
    except Exception:
        pass
    return a + b
"""
    )
    try:
        grade(code, "add", ADD_TESTS)
        time.sleep(0.2)
        with pytest.raises(BlockingIOError):
            conn, _ = server.accept()
            conn.close()
    finally:
        server.close()


def test_no_file_is_written_outside_the_sandbox_tmp(tmp_path: Path) -> None:
    name = f"edgebench-escape-{secrets.token_hex(4)}"
    targets = [tmp_path / name, Path("/root") / name, Path("/var/tmp") / name, Path.cwd() / name]
    code = f"""
import os
TARGETS = {[str(t) for t in targets]!r}
def add(a, b):
    for t in TARGETS:
        try:
            os.makedirs(os.path.dirname(t), exist_ok=True)
            with open(t, 'w') as f:
                f.write('escaped')
        except OSError:
            pass
    return a + b
"""
    try:
        verdict = grade(code, "add", ADD_TESTS)
        assert [t for t in targets if t.exists()] == []
    finally:
        for t in targets:
            t.unlink(missing_ok=True)
    assert verdict.passed, verdict.detail  # it may write its own /tmp; that is not a failure


def test_the_parents_environment_is_not_readable() -> None:
    # /proc/<pid>/environ shows a process's environment as it started, so the checker runs in a
    # child started with the secret, as edgebench would be with a token in its environment.
    secret = secrets.token_hex(12)
    code = """
        import os
        def add(a, b):
            pids = [os.getppid(), *(int(p) for p in os.listdir('/proc') if p.isdigit())]
            for pid in pids:
                try:
                    with open('/proc/%d/environ' % pid, 'rb') as f:
                        env = f.read()
                except OSError:
                    continue
                for kv in env.split(b'\\0'):
                    if kv.startswith(b'EDGEBENCH_TEST_SECRET='):
                        raise RuntimeError('LEAK ' + kv.decode())
            return a + b
        """
    script = (
        "import json, sys\nfrom test_sandbox import grade, ADD_TESTS\n"
        "v = grade(sys.argv[1], 'add', ADD_TESTS)\nprint(json.dumps(v.model_dump(mode='json')))\n"
    )
    env = {**os.environ, "EDGEBENCH_TEST_SECRET": secret}
    done = subprocess.run(
        [sys.executable, "-c", script, textwrap.dedent(code)],
        env=env,
        cwd=Path(__file__).parent,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    verdict = json.loads(done.stdout.strip().splitlines()[-1])
    assert secret not in done.stdout + done.stderr
    assert verdict["passed"], verdict["detail"]


# --- limits --------------------------------------------------------------------------------------


def _number(label: str, text: str) -> int:
    m = re.search(rf"{label} (\d+)", text)
    assert m, f"no {label} in {text!r}"
    return int(m.group(1))


def test_a_fork_bomb_is_bounded_by_the_process_limit() -> None:
    code = (
        FORK_EXEC
        + """
def add(a, b):
    n = 0
    try:
        while n < 300:
            spawn(['/bin/sleep', '2'])
            n += 1
    except OSError:
        pass
    raise RuntimeError('SPAWNED %d' % n)
"""
    )
    verdict = grade(code, "add", ADD_TESTS)
    assert not verdict.passed
    assert _number("SPAWNED", verdict.detail) < 100, verdict.detail


def test_a_classic_fork_bomb_ends_with_the_run() -> None:
    code = """
        import os, time
        def add(a, b):
            for _ in range(10_000):
                try:
                    os.fork()
                except OSError:
                    time.sleep(0.05)
            return a + b
        """
    started = time.monotonic()
    verdict = grade(code, "add", ADD_TESTS, timeout_s=4)
    assert not verdict.passed
    assert time.monotonic() - started < 20


def test_a_memory_hog_is_stopped_in_memory_and_in_tmpfs() -> None:
    tag = secrets.token_hex(4)
    code = f"""
import os
def add(a, b):
    try:
        hog = bytearray(3 << 30)
        return len(hog)
    except MemoryError:
        pass
    wrote = {{'/dev/shm': 0, '/tmp': 0}}
    for d in wrote:
        for i in range(48):  # 48 × 8 MiB: below the file-size limit per file, 384 MiB in all
            try:
                with open('%s/edgebench-hog-{tag}-%d' % (d, i), 'wb') as f:
                    f.write(b'x' * (8 << 20))
                wrote[d] += 8
            except OSError:
                break
    raise RuntimeError('SHM %d TMP %d' % (wrote['/dev/shm'], wrote['/tmp']))
"""
    try:
        verdict = grade(code, "add", ADD_TESTS, memory_mb=256)
        assert not verdict.passed
        assert list(Path("/dev/shm").glob(f"edgebench-hog-{tag}-*")) == []  # RAM outside RLIMIT_AS, kept
        assert 0 < _number("TMP", verdict.detail) <= 64, verdict.detail  # its own /tmp, capped
        assert _number("SHM", verdict.detail) <= 8, verdict.detail
    finally:
        for p in Path("/dev/shm").glob(f"edgebench-hog-{tag}-*"):
            p.unlink()


def test_memory_summed_over_forked_children_is_capped() -> None:
    # RLIMIT_AS is per process: 12 children under a 256 MiB limit each could hold ~3 GiB. The
    # process tree's resident memory is capped too (runtime.proc's RSS watchdog kills the group).
    code = """
        import os, time
        def add(a, b):
            for _ in range(12):  # below the process limit, with bwrap's init in a user namespace
                if os.fork() == 0:
                    block = b'x' * (200 << 20)
                    time.sleep(6)
                    os._exit(0)
            time.sleep(6)
            return a + b
        """
    started = time.monotonic()
    verdict = grade(code, "add", ADD_TESTS, memory_mb=256, timeout_s=8)
    assert not verdict.passed
    assert "memory" in verdict.detail, verdict.detail
    assert time.monotonic() - started < 8


def test_an_infinite_loop_hits_the_wall_limit() -> None:
    started = time.monotonic()
    verdict = grade("def add(a, b):\n    while True:\n        pass\n", "add", ADD_TESTS, timeout_s=2)
    assert verdict.failure is F.TIMEOUT
    assert time.monotonic() - started < 10


def test_no_process_outlives_the_run() -> None:
    mark = f"{secrets.randbelow(10**6)}.{secrets.randbelow(10**6)}"
    code = (
        FORK_EXEC
        + f"""
def add(a, b):
    spawn(['/bin/sleep', '{mark}'], setsid=True)
    return a + b
"""
    )
    grade(code, "add", ADD_TESTS)
    time.sleep(0.3)
    left = [p for p in psutil.process_iter(["cmdline"]) if mark in (p.info["cmdline"] or [])]
    for p in left:  # started by this test: end them by pid
        p.kill()
    assert left == []


def test_huge_output_does_not_reach_the_checker() -> None:
    code = """
        import os, sys
        def add(a, b):
            chunk = b'x' * (1 << 20)
            for _ in range(400):
                try:
                    os.write(1, chunk)
                    os.write(2, chunk)
                except OSError:
                    break
            return a + b
        """
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.monotonic()
    verdict = grade(code, "add", ADD_TESTS)
    grew_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grew_mib < 100, f"the checker's peak RSS grew by {grew_mib:.0f} MiB"
    assert time.monotonic() - started < 15
    assert len(verdict.detail) < 2000


# --- right answers still pass --------------------------------------------------------------------

PASSING = {
    "prints while it works": (
        "import sys\ndef add(a, b):\n    print('adding', a, b)\n"
        "    print('dbg', file=sys.stderr)\n    return a + b\n",
        "add",
        ADD_TESTS,
    ),
    "stdlib imports": (
        "import math, itertools, functools, re, collections, json, string\n"
        "def add(a, b):\n    return int(math.fsum(itertools.chain([a], [b])))\n",
        "add",
        ADD_TESTS,
    ),
    "recursion with a cache": (
        "from functools import lru_cache\n@lru_cache(None)\n"
        "def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n",
        "fib",
        ["assert fib(0) == 0", "assert fib(90) == 2880067194370816120"],
    ),
    "deep recursion, big ints": (
        "def factorial(n):\n    return 1 if n <= 1 else n * factorial(n - 1)\n",
        "factorial",
        [
            "assert factorial(0) == 1",
            "assert factorial(800) % 10**9 == 0",
            "assert len(str(factorial(800))) == 1977",
        ],
    ),
    "a main block that reads input": (
        "def add(a, b):\n    return a + b\n\n"
        "if __name__ == '__main__':\n    x = int(input('a: '))\n    print(add(x, 1))\n",
        "add",
        ADD_TESTS,
    ),
    "a demo after the function that fails": (
        "def add(a, b):\n    return a + b\n\nprint(add(int(input()), 2))\n",
        "add",
        ADD_TESTS,
    ),
    "a Counter where a dict is compared": (
        "from collections import Counter\ndef word_counts(text):\n    return Counter(text.split())\n",
        "word_counts",
        ['assert dict(word_counts("a b a")) == {"a": 2, "b": 1}', 'assert word_counts("") == {}'],
    ),
    "tuples, sets, unicode, keyword arguments": (
        "def stats(xs, *, unit='m'):\n    return (min(xs), max(xs)), set(xs), f'{len(xs)} {unit}'\n",
        "stats",
        [
            "assert stats([3, 1, 2]) == ((1, 3), {1, 2, 3}, '3 m')",
            "assert stats([1], unit='µm')[2] == '1 µm'",
            "assert stats(list(range(-5, 5)))[0] == (-5, 4)",
        ],
    ),
    "its own /tmp and a pool of processes": (
        "import os, tempfile\nfrom multiprocessing import Pool\n"
        "def add(a, b):\n    with tempfile.NamedTemporaryFile('w+') as f:\n"
        "        f.write(str(a))\n        f.seek(0)\n"
        "        a = int(f.read())\n    with Pool(2) as pool:\n        return sum(pool.map(int, [a, b]))\n",
        "add",
        ADD_TESTS,
    ),
    "a huge int": (
        "def big(n):\n    return 7 ** n\n",
        "big",
        ["assert big(20000) == 7 ** 20000", "assert big(20000) % 1000 == 1"],
    ),
}


@pytest.mark.parametrize("case", list(PASSING))
def test_correct_solutions_pass(case: str) -> None:
    code, entry, tests = PASSING[case]
    verdict = grade(code, entry, tests)
    assert verdict.passed, verdict.detail


def test_a_failing_check_names_the_call_and_what_it_returned() -> None:
    verdict = grade(
        "def to_f(c):\n    return c * 9 // 5 + 32\n", "to_f", ["assert abs(to_f(37.5) - 99.5) < 1e-9"]
    )
    assert verdict.failure is F.WRONG
    assert "to_f(37.5) returned 99.0" in verdict.detail


def test_an_exception_is_a_failure_with_its_type() -> None:
    verdict = grade("def add(a, b):\n    raise ValueError('nope')\n", "add", ADD_TESTS)
    assert verdict.failure is F.WRONG
    assert "raised ValueError: nope" in verdict.detail


def test_results_too_big_to_send_or_show_are_failures_not_crashes() -> None:
    huge = grade("def big(n):\n    return list(range(n))\n", "big", ["assert big(2_000_000) == []"])
    assert huge.failure is F.WRONG and "too large" in huge.detail
    wide = grade("def big(n):\n    return 7 ** n + 1\n", "big", ["assert big(20000) == 7 ** 20000"])
    assert wide.failure is F.WRONG and "bits" in wide.detail  # repr() refuses > 4300 digits


def test_a_missing_function_and_a_syntax_error() -> None:
    assert "no function named add" in grade("def plus(a, b):\n    return a + b\n", "add", ADD_TESTS).detail
    assert grade("def add(a, b) return a\n", "add", ADD_TESTS).failure is F.UNPARSEABLE


def test_the_models_syntax_warnings_stay_off_our_stderr() -> None:
    import warnings

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert grade("def is_one(x):\n    return x is 1\n", "is_one", ["assert is_one(1)"]).passed
    assert [w for w in seen if issubclass(w.category, SyntaxWarning)] == []


def test_the_sandbox_environment_is_empty_and_unprivileged(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    code = """
        import os
        def probe():
            return [sorted(os.environ), os.getuid() != 0, os.getcwd(), os.path.exists('/etc/passwd'),
                    os.path.exists('/work'), os.access('/usr', os.W_OK)]
        """
    verdict = grade(
        code,
        "probe",
        [
            "assert probe() == [['HOME', 'LANG', 'PATH', 'PWD', 'PYTHONHASHSEED', 'TMPDIR'], "
            "True, '/tmp', False, False, False]"
        ],
    )
    assert verdict.passed, verdict.detail


# --- no isolation: not scored, unless allowed ----------------------------------------------------


@no_bwrap_needed
def test_without_bwrap_code_is_not_scored(monkeypatch: pytest.MonkeyPatch) -> None:
    from edgebench.quality import sandbox

    monkeypatch.setattr(sandbox, "BWRAP", "edgebench-no-such-bwrap")
    monkeypatch.setattr(sandbox, "_allowed", False)
    verdict = grade("def add(a, b):\n    return a + b\n", "add", ADD_TESTS)
    assert verdict.failure is F.UNSANDBOXED
    assert "bubblewrap (bwrap) is not installed" in verdict.detail
    assert grade(WRONG_ADD, "add", ADD_TESTS).failure is F.UNSANDBOXED  # not a fail either


@no_bwrap_needed
def test_unsandboxed_when_allowed_still_checks_outside_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    from edgebench.quality import sandbox

    monkeypatch.setattr(sandbox, "BWRAP", "edgebench-no-such-bwrap")
    monkeypatch.setattr(sandbox, "_allowed", False)
    sandbox.allow_unsandboxed(True)
    ok = grade("def add(a, b):\n    return a + b\n", "add", ADD_TESTS)
    assert ok.passed and "WITHOUT a sandbox" in ok.detail
    lying = grade(textwrap.dedent(FORGERIES["call the harness's finish function"]), "add", ADD_TESTS)
    assert not lying.passed and "WITHOUT a sandbox" in lying.detail
    eq = "class A:\n    def __eq__(self, o):\n        return True\ndef add(a, b):\n    return A()\n"
    assert not grade(eq, "add", ADD_TESTS).passed


def test_bwrap_that_cannot_create_namespaces_is_no_isolation(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from edgebench.quality import sandbox

    shared = Path(tempfile.mkdtemp(prefix="edgebench-fake-bwrap-"))  # as root, a dropped uid runs bwrap
    shared.chmod(0o755)
    fake = shared / "bwrap"
    fake.write_text(
        "#!/bin/sh\necho 'bwrap: No permissions to creating new namespace, likely because the kernel does "
        "not allow non-privileged user namespaces.' >&2\nexit 1\n"
    )
    fake.chmod(0o755)
    monkeypatch.setattr(sandbox, "BWRAP", str(fake))
    monkeypatch.setattr(sandbox, "_probed", {})
    monkeypatch.setattr(sandbox, "_allowed", False)
    first = grade("def add(a, b):\n    return a + b\n", "add", ADD_TESTS)
    assert first.failure is F.UNSANDBOXED
    assert "No permissions to creating new namespace" in first.detail
    again = grade("def add(a, b):\n    return a + b\n", "add", ADD_TESTS)  # remembered, not retried
    assert again.failure is F.UNSANDBOXED and "namespace" in again.detail
    shutil.rmtree(shared)


# --- what a hidden test may contain --------------------------------------------------------------

UNCHECKABLE = {
    "a comprehension variable in the arguments": "assert all(is_even(n) for n in [2, 4])",
    "the function as a value": "assert list(map(is_even, [2])) == [True]",
    "a name the checker lacks": "assert is_even(2) == EXPECTED",
    "no call at all": "assert True",
    "star arguments": "assert is_even(*[2])",
}


@no_bwrap_needed
@pytest.mark.parametrize("case", list(UNCHECKABLE))
def test_a_test_the_checker_cannot_run_fails_at_load(case: str) -> None:
    with pytest.raises(ValueError, match="test"):
        SPEC.validate_python({"kind": "code", "entry": "is_even", "tests": [UNCHECKABLE[case]]})


@no_bwrap_needed
def test_code_specs_need_an_entry_and_may_compute_arguments() -> None:
    with pytest.raises(ValueError, match="entry"):
        SPEC.validate_python({"kind": "code", "tests": ["assert f(1) == 1"]})
    from edgebench.quality.coderun import plan_tests

    plan = plan_tests("f", ["assert f(list(range(3))) == f([0, 1, 2])", "assert [x for x in f(1)] == []"])
    assert plan.calls == (([[0, 1, 2]], {}), ([1], {}))  # equal arguments are one call


@no_bwrap_needed
def test_the_checker_decodes_only_plain_values() -> None:
    from edgebench.quality._sandbox_runner import Opaque, decode, encode

    value = [
        1,
        -0.5,
        "é",
        None,
        True,
        (1, 2),
        {3},
        frozenset({4}),
        {"k": [1]},
        {(1, 2): "t"},
        b"\x00",
        2j,
        10**5000,
    ]
    assert decode(json.loads(json.dumps(encode(value)))) == value
    assert isinstance(decode(encode(object())), Opaque)
    assert decode(encode(float("nan"))) != decode(encode(float("nan")))  # nan stays nan
    for forged in (
        {"status": "passed"},
        {"$": "eval", "v": "1"},
        {"$": "set", "v": [[1]]},
        {"$": "int", "v": 5},
    ):
        with pytest.raises(ValueError):
            decode(forged)


class _AlwaysPalindrome(Backend):
    """Answers every prompt with a correct is_palindrome: right for one item, wrong for the others."""

    name = "fake"

    def chat(self, req: ChatRequest) -> ChatResponse:
        return ChatResponse(
            content="```python\ndef is_palindrome(s):\n    return s == s[::-1]\n```", wall_s=0.1
        )


@no_bwrap_needed
def test_unsandboxed_rows_are_left_out_of_the_score_and_asked_again(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from edgebench.quality import load_suite, sandbox
    from edgebench.quality.runner import QualitySettings, Target, run_suite
    from edgebench.quality.score import score
    from edgebench.store import Provenance, Store

    store = Store(tmp_path / "s.sqlite")
    prov = Provenance(build_id="b1-fake", host_fingerprint="h", model_sha256="0" * 64)
    target = Target(label="fake", mode="chat", provenance=prov, backend_id="fake")
    suite, settings = load_suite("seed14"), QualitySettings(samples=0, variants=False)
    monkeypatch.setattr(sandbox, "BWRAP", "edgebench-no-such-bwrap")
    monkeypatch.setattr(sandbox, "_allowed", False)
    first = {r.item: r for r in run_suite(store, _AlwaysPalindrome(), target, suite, settings)}
    assert first["code.palindrome"].failure is F.UNSANDBOXED
    assert first["code.list_comprehension"].failure is F.WRONG  # no ListComp: known without running it
    sc = score(list(first.values()))
    assert sc.unsandboxed == 1 and sc.runs == len(first) - 1
    assert [c.items for c in sc.categories if c.category == "code"] == [1]  # not a 0/2 code score
    if shutil.which("bwrap") is None:
        return  # EDGEBENCH_NO_BWRAP=1: the second half needs isolation
    monkeypatch.setattr(sandbox, "BWRAP", "bwrap")
    again = run_suite(store, _AlwaysPalindrome(), target, suite, settings)
    by_item = {r.item: r for r in again}
    assert not by_item["code.palindrome"].resumed and by_item["code.palindrome"].passed
    assert all(r.resumed for r in again if r.item != "code.palindrome")
    assert score(again).unsandboxed == 0


@no_bwrap_needed
def test_allow_unsandboxed_in_the_config_and_on_the_command_line(tmp_path: Path) -> None:
    from edgebench.config import load_config

    allowed, plain = tmp_path / "allowed.toml", tmp_path / "plain.toml"
    allowed.write_text("[quality]\nallow_unsandboxed = true\n")
    plain.write_text("[run]\nsamples = 0\n")
    assert load_config(allowed).quality.allow_unsandboxed is True
    assert load_config(plain).quality.allow_unsandboxed is False  # refusing is the default
    import inspect

    from edgebench.cli._quality import quality_run

    option = inspect.signature(quality_run).parameters["allow_unsandboxed"].default
    assert option.default is False and "--allow-unsandboxed" in option.param_decls


def test_a_readable_interpreter_gets_a_user_namespace_that_cannot_nest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # With an interpreter any uid can read (a system python; here the venv's lives under /root,
    # 0700), bwrap itself runs unprivileged, also as root: the code is nobody in a user namespace
    # that refuses further ones (its whole kernel attack surface of unshare(CLONE_NEWUSER) gone).
    from edgebench.quality import sandbox

    system = Path("/usr/bin/python3")
    if not sandbox._others_can_read(os.path.realpath(sys.base_prefix)):
        if not system.exists():
            pytest.skip("no interpreter readable by other users on this machine")
        monkeypatch.setattr(sys, "base_prefix", "/usr")
        monkeypatch.setattr(sandbox, "_interpreter", lambda: str(system))
    code = """
        import os, subprocess
        def probe():
            nested = subprocess.run(['unshare', '-U', 'true'], capture_output=True).returncode
            return [os.getuid(), nested != 0]
        """
    verdict = grade(code, "probe", ["assert probe() == [65534, True]"])
    assert verdict.passed, verdict.detail


def test_the_code_cannot_switch_the_sandbox_off_for_later_replies(monkeypatch: pytest.MonkeyPatch) -> None:
    # Erasing the runner's report and printing a bwrap-like error must not read as "no isolation
    # here": that would dodge this verdict and, with allow_unsandboxed, run later replies unisolated.
    from edgebench.quality import sandbox

    monkeypatch.setattr(sandbox, "_allowed", True)
    code = """
        import os, sys
        open('/out/results.jsonl', 'w').close()
        sys.stderr.write('bwrap: No permissions to creating new namespace\\n')
        sys.stderr.flush()
        os._exit(1)
        """
    verdict = grade(code, "add", ADD_TESTS)
    assert verdict.failure is F.WRONG, verdict
    assert "WITHOUT" not in verdict.detail
    later = grade("import os\ndef add(a, b):\n    return a + b + (os.getuid() == 0)\n", "add", ADD_TESTS)
    assert later.passed and "WITHOUT" not in later.detail, later.detail
