"""Bad input is refused before any work starts, as one `edgebench: error:` line naming the input.

"Before any work": the config points llama.cpp's bin_dir at a directory that does not exist, so
a command that locates the runtime (or builds it) before checking its arguments fails with the
runtime error instead of naming the bad argument.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cli_inproc import run
from edgebench.testing.synth import write_tiny_llama
from gguf_edit import VT, GGUFTemplate, Value


@pytest.fixture
def no_runtime(tmp_path: Path) -> Path:
    """./edgebench.toml (the tests run in tmp_path) naming a llama.cpp bin_dir that is not there."""
    cfg = tmp_path / "edgebench.toml"
    cfg.write_text('[llama_cpp]\nbin_dir = "/nonexistent/llama.cpp/bin"\n')
    return cfg


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> GGUFTemplate:
    return GGUFTemplate(write_tiny_llama(tmp_path_factory.mktemp("tpl") / "tiny.gguf"))


# ---------------------------------------------------------------------------- item 6: no internal errors


def test_nan_hyperparameter_refused_at_models_add_and_plan(
    monkeypatch: pytest.MonkeyPatch, template: GGUFTemplate, tmp_path: Path
) -> None:
    bad = template.write(
        tmp_path / "nan.gguf", {"llama.feed_forward_length": Value(VT.FLOAT32, float("nan"))}
    )
    for args in (("models", "add", str(bad)), ("plan", str(bad), "--ctx", "1024")):
        line = run(monkeypatch, *args).error_line()
        assert f"{bad}: llama.feed_forward_length = nan: not a finite number" in line


def test_plan_parallel_out_of_range_is_one_line(monkeypatch: pytest.MonkeyPatch, tiny_model: Path) -> None:
    line = run(monkeypatch, "plan", str(tiny_model), "--parallel", "257").error_line()
    assert "--parallel" in line and "256" in line


def test_a_validation_error_from_deeper_code_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import edgebench.cli._models as models_cli
    from edgebench.runtime.flags import RuntimeConfig

    def broken(_store: object) -> None:
        RuntimeConfig(parallel=257)

    monkeypatch.setattr(models_cli, "list_models", broken)
    r = run(monkeypatch, "models", "list")
    assert r.code == 1
    assert r.error_line() == (
        "edgebench: error: RuntimeConfig.parallel: Input should be less than or equal to 256 (got 257)"
    )


def test_non_utf8_file_name(monkeypatch: pytest.MonkeyPatch, tiny_model: Path, tmp_path: Path) -> None:
    odd = Path(os.fsdecode(bytes(tmp_path) + b"/bad\xff.gguf"))
    odd.write_bytes(tiny_model.read_bytes())
    line = run(monkeypatch, "models", "add", str(odd)).error_line()
    assert f"{tmp_path}/bad" in line and "not valid UTF-8" in line


def test_symlink_loop(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "a.gguf").symlink_to(tmp_path / "b.gguf")
    (tmp_path / "b.gguf").symlink_to(tmp_path / "a.gguf")
    line = run(monkeypatch, "models", "add", str(tmp_path / "a.gguf")).error_line()
    assert str(tmp_path / "a.gguf") in line and "symlink loop" in line


@pytest.mark.parametrize("value", ["0", "nan", "-1", "inf"])
def test_sweep_timeout_must_be_finite_and_positive(
    monkeypatch: pytest.MonkeyPatch, no_runtime: Path, tiny_model: Path, value: str
) -> None:
    line = run(monkeypatch, "sweep", str(tiny_model), "--timeout", value).error_line()
    assert f"--timeout {value}" in line


def test_unwritable_export_is_refused_before_the_sweep(
    monkeypatch: pytest.MonkeyPatch, no_runtime: Path, tiny_model: Path, tmp_path: Path
) -> None:
    target = tmp_path / "no-such-dir" / "bench.jsonl"
    line = run(monkeypatch, "sweep", str(tiny_model), "--export", str(target)).error_line()
    assert f"--export {target}" in line
    line = run(monkeypatch, "sweep", str(tiny_model), "--export", str(tmp_path)).error_line()
    assert f"--export {tmp_path}" in line and "directory" in line


def test_route_out_must_be_a_directory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    a_file = tmp_path / "passwd"
    a_file.write_text("root:x:0:0\n")
    for cmd, opt in (("route", "--out"), ("report", "--html")):
        line = run(monkeypatch, cmd, opt, str(a_file)).error_line()
        assert f"{opt} {a_file}" in line and "not a directory" in line
    assert a_file.read_text() == "root:x:0:0\n"


@pytest.mark.parametrize("value", ["nan", "-1", "0", "inf"])
def test_context_budget_must_be_finite_and_positive(
    monkeypatch: pytest.MonkeyPatch, no_runtime: Path, tiny_model: Path, value: str
) -> None:
    line = run(monkeypatch, "context", str(tiny_model), "--budget-mib", value).error_line()
    assert f"--budget-mib {value}" in line


def test_deeply_nested_toml(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cfg = tmp_path / "deep.toml"
    cfg.write_text("x = " + "[" * 5000 + "]" * 5000 + "\n")
    line = run(monkeypatch, "--config", str(cfg), "models", "list").error_line()
    assert str(cfg) in line and "nested too deeply" in line


# ---------------------------------------------------------------------------- item 7: model names


def test_duplicate_model_name_is_refused_or_replaced(
    monkeypatch: pytest.MonkeyPatch, template: GGUFTemplate, tmp_path: Path
) -> None:
    a = template.write(tmp_path / "a.gguf")
    b = template.write(tmp_path / "b.gguf", {"llama.context_length": Value(VT.UINT32, 1024)})
    assert run(monkeypatch, "models", "add", str(a), "--name", "m").code == 0
    line = run(monkeypatch, "models", "add", str(b), "--name", "m").error_line()
    assert "model name 'm'" in line and str(a) in line and "--replace" in line
    shown = run(monkeypatch, "models", "show", "m", "--json")
    assert f'"path": "{a}"' in shown.stdout
    assert run(monkeypatch, "models", "add", str(b), "--name", "m", "--replace").code == 0
    shown = run(monkeypatch, "models", "show", "m", "--json")
    assert f'"path": "{b}"' in shown.stdout
    listed = run(monkeypatch, "models", "list", "--json").stdout
    assert listed.count('"name": "m"') == 1 and str(a) not in listed


def test_same_general_name_in_two_files_gets_the_file_name(
    monkeypatch: pytest.MonkeyPatch, template: GGUFTemplate, tmp_path: Path
) -> None:
    # two quantizations of one model carry the same general.name: both register, told apart
    same = {"general.name": Value(VT.STRING, "Qwen3 4B")}
    q4 = template.write(tmp_path / "qwen3-4b-q4.gguf", same)
    q8 = template.write(tmp_path / "qwen3-4b-q8.gguf", same | {"llama.context_length": Value(VT.UINT32, 99)})
    assert run(monkeypatch, "models", "add", str(q4), str(q8)).code == 0
    listed = run(monkeypatch, "models", "list", "--json").stdout
    assert '"name": "Qwen3 4B"' in listed and '"name": "qwen3-4b-q8"' in listed


def test_name_with_control_characters_is_refused(monkeypatch: pytest.MonkeyPatch, tiny_model: Path) -> None:
    line = run(monkeypatch, "models", "add", str(tiny_model), "--name", "evil\n\x1b[31mred").error_line()
    assert "--name 'evil\\n" in line and "\x1b" not in line and "control characters" in line


def test_unwritable_data_dir_names_the_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    if os.geteuid() == 0:  # root writes anywhere except where the kernel says no
        home = Path("/sys/kernel")
        if not home.is_dir() or os.access(home / "edgebench.sqlite", os.F_OK):
            pytest.skip("no unwritable directory for root here")
    else:
        home = tmp_path / "ro"
        home.mkdir()
        home.chmod(0o555)
    monkeypatch.setenv("EDGEBENCH_HOME", str(home))
    line = run(monkeypatch, "models", "list").error_line()
    assert f"store {home / 'edgebench.sqlite'}" in line
    assert f"{home} is not writable" in line and "data_dir" in line


# ---------------------------------------------------------------------------- item 8: untrusted names


def test_control_characters_in_gguf_name_never_reach_the_terminal(
    monkeypatch: pytest.MonkeyPatch, template: GGUFTemplate, tmp_path: Path
) -> None:
    evil = template.write(
        tmp_path / "evil.gguf", {"general.name": Value(VT.STRING, "evil\n\x1b[31mred\x1b]0;pwn\x07")}
    )
    added = run(monkeypatch, "models", "add", str(evil))
    assert added.code == 0 and "\x1b" not in added.stdout
    line = run(monkeypatch, "models", "show", "nosuch").error_line()
    assert "evil\\nred" in line and "\x1b" not in line and "\x07" not in line
    shown = run(monkeypatch, "models", "show", "evil\\nred")
    assert shown.code == 0 and "\x1b" not in shown.stdout


# ---------------------------------------------------------------------------- item 9: checked first


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (("--threads", ""), "--threads ''"),
        (("--threads", ",,,"), "--threads ',,,'"),
        (("--threads", "0,2"), "--threads '0,2'"),
        (("--ubatch", "0"), "--ubatch '0'"),
        (("--depth", "-1"), "--depth '-1'"),
        (("--kv", ""), "--kv ''"),
        (("--kv", "q9_0"), "--kv 'q9_0'"),
        (("--fa", ","), "--fa ','"),
        (("--cpus", "big;;"), None),  # separators only: the default CPU sets
        (("--ci", "nan"), "--ci nan"),
        (("--n-prompt", "0"), "--n-prompt"),
    ],
)
def test_sweep_arguments_are_checked_before_the_runtime_is_located(
    monkeypatch: pytest.MonkeyPatch,
    no_runtime: Path,
    tiny_model: Path,
    args: tuple[str, ...],
    names: str | None,
) -> None:
    line = run(monkeypatch, "sweep", str(tiny_model), *args).error_line()
    if names is None:
        assert "llama.cpp" in line  # valid: it got as far as looking for the runtime
    else:
        assert names in line, line


def test_sweep_unknown_model_is_refused_before_the_runtime(
    monkeypatch: pytest.MonkeyPatch, no_runtime: Path
) -> None:
    line = run(monkeypatch, "sweep", "nosuch-model").error_line()
    assert "model 'nosuch-model'" in line


def test_quality_suite_dir_must_exist(
    monkeypatch: pytest.MonkeyPatch, no_runtime: Path, tmp_path: Path
) -> None:
    suite = tmp_path / "mine.yaml"
    suite.write_text("name: mine\nitems: []\n")
    line = run(
        monkeypatch, "quality", "run", "--suite", str(suite), "--suite-dir", "/nonexistent", "--backend", "x"
    ).error_line()
    assert "/nonexistent" in line and "not a directory" in line


@pytest.mark.parametrize("cmd", ["rank", "report", "route"])
def test_decide_commands_refuse_an_unknown_suite(monkeypatch: pytest.MonkeyPatch, cmd: str) -> None:
    line = run(monkeypatch, cmd, "--suite", "nosuch").error_line()
    assert "--suite 'nosuch'" in line and "seed14" in line


def test_doctor_sysroot_must_be_a_filesystem_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    line = run(monkeypatch, "doctor", "--sysroot", "/nonexistent", "--no-bandwidth").error_line()
    assert "--sysroot /nonexistent" in line and "not a directory" in line
    line = run(monkeypatch, "doctor", "--sysroot", str(tmp_path), "--no-bandwidth").error_line()
    assert f"--sysroot {tmp_path}" in line and "proc/cpuinfo" in line


@pytest.mark.parametrize(
    ("toml", "field"),
    [
        ('[run]\nkv = ["f16", "q9_0"]\n', "run.kv"),
        ('[run]\ncontext_kv = "q9_0"\n', "run.context_kv"),
        ('[run]\nsuite = "nosuch"\n', "run.suite"),
        ('[run]\nsuite_dirs = ["no/such/dir"]\n', "run.suite_dirs"),
        ('[[models]]\npath = "a.gguf"\nname = "m"\n[[models]]\npath = "b.gguf"\nname = "m"\n', "models"),
        ('[[models]]\npath = "a.gguf"\nname = "a\\u001b[31m"\n', "models.0.name"),
    ],
)
def test_run_settings_are_checked_at_load(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, toml: str, field: str
) -> None:
    cfg = tmp_path / "edgebench.toml"
    cfg.write_text(toml)
    line = run(monkeypatch, "models", "list").error_line()  # any command: the config is loaded first
    assert f"{cfg}: {field}" in line and "--kv" not in line


def test_plan_default_context_follows_a_short_ctx_train(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    short = write_tiny_llama(tmp_path / "short.gguf", ctx_train=1024)
    r = run(monkeypatch, "plan", str(short), "--json")
    assert r.code == 0, r.stderr
    assert '"n_ctx": 1024' in r.stdout


def test_markup_in_gguf_name_or_path_is_shown_as_text(
    monkeypatch: pytest.MonkeyPatch, template: GGUFTemplate, tmp_path: Path
) -> None:
    # Rich reads [..] as markup: "[bold]" vanished from tables and a stray "[/x]" was an internal error
    folder = tmp_path / "[test]"
    folder.mkdir()
    path = template.write(folder / "m.gguf", {"general.name": Value(VT.STRING, "[/x] [bold]big")})
    added = run(monkeypatch, "models", "add", str(path))
    assert added.code == 0, added.stderr
    assert "(/x) (bold)big" in added.stdout
    shown = run(monkeypatch, "models", "show", "(/x) (bold)big")
    assert shown.code == 0 and "[test]" in shown.stdout
    line = run(monkeypatch, "models", "add", str(path), "--name", "a[b]").error_line()
    assert "square brackets" in line
