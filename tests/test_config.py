from __future__ import annotations

from pathlib import Path

import pytest

from edgebench.config import load_config
from edgebench.errors import ConfigError


def test_defaults_without_any_file(_data_home: Path) -> None:
    cfg = load_config()
    assert cfg.source_file is None
    assert cfg.data_dir == _data_home
    assert cfg.store_path == _data_home / "edgebench.sqlite"
    assert cfg.sweep.kv == ["f16", "q8_0", "q4_0"]
    assert cfg.llama_cpp.preset == "auto"
    assert cfg.models == []


def test_file_in_cwd_is_read_and_paths_are_relative_to_it(tmp_path: Path) -> None:
    (tmp_path / "edgebench.toml").write_text(
        '[llama_cpp]\nbin_dir = "build/bin"\npreset = "rk3588"\n\n'
        '[[models]]\npath = "models/a.gguf"\nname = "a"\n\n'
        '[[backends]]\nname = "npu"\nkind = "rkllama"\nurl = "http://127.0.0.1:8080/"\nmax_ctx = 4096\n'
        '[sweep]\nthreads = [2, 4, 6]\nkv = ["q4_0"]\n'
    )
    cfg = load_config()
    assert cfg.source_file == tmp_path / "edgebench.toml"
    assert cfg.llama_cpp.bin_dir == tmp_path / "build/bin"
    assert cfg.models[0].path == tmp_path / "models/a.gguf"
    assert cfg.backends[0].url == "http://127.0.0.1:8080"
    assert cfg.backends[0].max_ctx == 4096
    assert cfg.sweep.threads == [2, 4, 6]


@pytest.mark.parametrize(
    ("toml", "needle"),
    [
        ('[sweep]\nthreads = ["four"]\n', "sweep.threads.0: Input should be a valid integer"),
        ("[sweep]\nthreads = [0]\n", "sweep.threads: thread counts must be ≥ 1"),
        ('[sweep]\nkv = ["q3_k"]\n', "sweep.kv: unknown KV cache type 'q3_k'"),
        (
            "[budgets]\nram_reserve_mib = -5\n",
            "budgets.ram_reserve_mib: Input should be greater than or equal to 0",
        ),
        ('[[backends]]\nname = "x"\nurl = "localhost:8080"\n', "backends.0.url: must start with http://"),
        ("[sweep]\nthreds = [2]\n", "sweep.threds: Extra inputs are not permitted"),
        ("[sweep\n", "not valid TOML"),
    ],
)
def test_bad_values_name_the_field_and_reason(tmp_path: Path, toml: str, needle: str) -> None:
    (tmp_path / "edgebench.toml").write_text(toml)
    with pytest.raises(ConfigError) as exc:
        load_config()
    assert needle in str(exc.value)
    assert str(tmp_path / "edgebench.toml") in str(exc.value)
    assert "\n" not in str(exc.value)


def test_explicit_missing_file() -> None:
    with pytest.raises(ConfigError, match=r"nope\.toml: not found"):
        load_config(Path("nope.toml"))


def test_env_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "elsewhere.toml"
    f.write_text("[budgets]\nlatency_s = 12.5\n")
    monkeypatch.setenv("EDGEBENCH_CONFIG", str(f))
    monkeypatch.setenv("EDGEBENCH_CACHE", str(tmp_path / "cache"))
    cfg = load_config()
    assert cfg.budgets.latency_s == 12.5
    assert cfg.builds_dir == tmp_path / "cache" / "llama.cpp"


def test_data_and_cache_dirs_in_the_file_are_relative_to_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "edgebench.toml").write_text('data_dir = "data"\ncache_dir = "~/cache-x"\n')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = load_config(conf / "edgebench.toml")
    assert cfg.data_dir == conf / "data"
    assert cfg.store_path == conf / "data" / "edgebench.sqlite"
    assert cfg.cache_dir == Path("~/cache-x").expanduser()


@pytest.mark.parametrize(
    ("toml", "needle"),
    [
        ("[sweep]\ntimeout_s = inf\n", "sweep.timeout_s: "),
        ("[sweep]\nci_target = nan\n", "sweep.ci_target: "),
        ("[budgets]\nlatency_s = inf\n", "budgets.latency_s: "),
        ("[run]\nkv = []\n", "run.kv: "),
        ("[run]\nflash_attn = []\n", "run.flash_attn: "),
    ],
)
def test_non_finite_and_empty_settings_are_refused(tmp_path: Path, toml: str, needle: str) -> None:
    (tmp_path / "edgebench.toml").write_text(toml)
    with pytest.raises(ConfigError) as exc:
        load_config()
    assert f"{tmp_path / 'edgebench.toml'}: {needle}" in str(exc.value)


def test_run_suite_path_is_relative_to_the_file(tmp_path: Path) -> None:
    (tmp_path / "suites").mkdir()
    (tmp_path / "suites" / "mine.yaml").write_text("name: mine\nitems: []\n")
    (tmp_path / "edgebench.toml").write_text('[run]\nsuite = "suites/mine.yaml"\n')
    assert load_config().run.suite == str(tmp_path / "suites" / "mine.yaml")
    (tmp_path / "edgebench.toml").write_text('[run]\nsuite = "mine"\nsuite_dirs = ["suites"]\n')
    assert load_config().run.suite == "mine"
