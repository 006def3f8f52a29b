"""Every FIGGEN key, FIGGEN_* variable and __figure__ field is checked, naming what it accepts."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import Site
from pelican.plugins.figgen import discover
from pelican.plugins.figgen.errors import FigureBuildError, FigureError, SettingsError
from pelican.plugins.figgen.settings import DEFAULTS, RULES, merge

BAD = [  # key, value, what the message must say it accepts
    ("root", 3, "None or a folder"),
    ("root", "", "None or a folder"),
    ("scripts", None, "a folder"),
    ("cache_dir", "", "a folder"),
    ("cache_dir", 5, "a folder"),
    ("freeze_dir", ["_freeze"], "a folder"),
    ("output_dir", "../up", "no '..'"),
    ("output_dir", "/abs/figures", "relative"),
    ("output_dir", "", "not empty"),
    ("output_dir", "/", "not empty"),
    ("output_dir", 7, "a folder name"),
    ("python", "", "Python interpreter"),
    ("python", None, "Python interpreter"),
    ("seed", "abc", "0 <= seed < 2\\*\\*32"),
    ("seed", -1, "0 <= seed"),
    ("seed", 2**32, "seed < 2\\*\\*32"),
    ("seed", True, "whole number"),
    ("seed", 1.5, "whole number"),
    ("params", [1], "a dict \\{figure name"),
    ("params", {"fig": 3}, "a dict \\{figure name"),
    ("params", {"fig": {1: "x"}}, "str keys"),
    ("params", {"fig": {"f": object()}}, "JSON values"),
    ("params", {"fig": {"x": float("nan")}}, "JSON values"),
    ("timeout", -1, "a number of seconds > 0"),
    ("timeout", 0, "a number of seconds > 0"),
    ("timeout", "abc", "a number of seconds > 0"),
    ("timeout", True, "a number of seconds > 0"),
    ("timeout", float("inf"), "a number of seconds > 0"),
    ("versions", 5, "a list of distribution names"),
    ("versions", "numpy", "a list of distribution names"),
    ("versions", ["numpy", 3], "a list of distribution names"),
    ("source_url", "https://x.org/blob/main", "containing \\{path\\}"),
    ("source_url", "javascript:alert('{path}')", "http\\(s\\) or relative"),
    ("source_url", "https://x.org/{path}/{line}", "containing \\{path\\}"),
    ("source_url", 3, "containing \\{path\\}"),
    ("on_error", "ignore", "'strict', 'keep-going'"),
    ("mode", "Frozen", "'run', 'frozen'"),
    ("jobs", 0, "a whole number >= 1, or None"),
    ("jobs", "2", "a whole number >= 1, or None"),
    ("threads", 2.0, "a whole number >= 1"),
    ("threads", True, "a whole number >= 1"),
    ("gpus", [True], "'auto' or a list of GPU ids"),
    ("preload", 1, "True or False"),
    ("memory_mb", True, "'auto', None or a whole number"),
    ("intermediates_max_mb", 0, "a whole number of MiB >= 1, or None"),
    ("verify_tolerance", -0.1, "a number >= 0"),
    ("verify_tolerance", "0.1", "a number >= 0"),
    ("verify_tolerance", float("nan"), "a number >= 0"),
    ("remote", "my-bucket/figs", "None or an fsspec URL such as 's3://bucket/prefix'"),
    ("remote", 3, "None or an fsspec URL"),
    ("remote", "s3://", "None or an fsspec URL"),
    ("remote_write", "yes", "True or False"),
]


@pytest.mark.parametrize(("key", "value", "accepts"), BAD)
def test_a_wrong_value_names_the_key_the_value_and_what_it_accepts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, key: str, value: object, accepts: str
) -> None:
    for variable in ("FIGGEN_ON_ERROR", "FIGGEN_MODE", "FIGGEN_JOBS", "FIGGEN_REMOTE",
                     "FIGGEN_REMOTE_WRITE"):
        monkeypatch.delenv(variable, raising=False)
    with pytest.raises(SettingsError) as err:
        merge({key: value}, tmp_path / "content")
    assert str(err.value).startswith(f"FIGGEN['{key}'] is {value!r}; expected ")
    assert re.search(accepts, str(err.value)), str(err.value)


def test_every_key_has_a_rule_and_the_defaults_pass_it(tmp_path: Path) -> None:
    assert set(RULES) == set(DEFAULTS)
    merge({}, tmp_path)  # the defaults themselves are valid


def test_good_values_are_kept_and_normalised(tmp_path: Path) -> None:
    s = merge({"root": tmp_path, "seed": 2**32 - 1, "timeout": 0.5, "versions": ["numpy"],
               "output_dir": "img/figs/", "source_url": "https://x.org/blob/main/{path}",
               "params": {"imagenet": {"model": "m", "sizes": [1, 2]}}, "verify_tolerance": 0,
               "jobs": None, "gpus": [0, "1"], "memory_mb": None}, "elsewhere")
    assert (s.root, s.seed, s.timeout, s.versions) == (tmp_path.resolve(), 2**32 - 1, 0.5,
                                                      ("numpy",))
    assert (s.output_dir, s.verify_tolerance, s.gpus) == ("img/figs", 0.0, ("0", "1"))
    assert s.params == {"imagenet": {"model": "m", "sizes": [1, 2]}}
    assert merge({"source_url": "../src/{path}"}, tmp_path).source_url == "../src/{path}"


@pytest.mark.parametrize("figgen", [[("timeout", 5)], "timeout=5", 5])
def test_figgen_itself_must_be_a_dict(tmp_path: Path, figgen: object) -> None:
    with pytest.raises(SettingsError, match=r"^FIGGEN is .*; expected a dict of settings"):
        merge(figgen, tmp_path)  # type: ignore[arg-type]


def test_a_key_that_is_not_a_string_is_an_unknown_key(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"unknown key 1 \(known: root, scripts"):
        merge({1: 2}, tmp_path)


@pytest.mark.parametrize(("variable", "value", "accepts"), [
    ("FIGGEN_ON_ERROR", "keepgoing", "one of \\('strict', 'keep-going'\\)"),
    ("FIGGEN_MODE", "", "one of \\('run', 'frozen'\\)"),
    ("FIGGEN_JOBS", "-2", "a whole number >= 1"),
    ("FIGGEN_JOBS", "two", "a whole number >= 1"),
    ("FIGGEN_REMOTE_WRITE", "yes", "True or False \\(FIGGEN_REMOTE_WRITE: 1 or 0\\)"),
    ("FIGGEN_REMOTE", "bucket", "None or an fsspec URL"),
])
def test_a_wrong_environment_override_names_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variable: str, value: str, accepts: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError, match=rf"^{variable} \(FIGGEN\['\w+'\]\) is {value!r}; "
                                            rf"expected {accepts}"):
        merge({}, tmp_path)


def test_figgen_jobs_is_read_as_a_whole_number(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FIGGEN_JOBS", " 3 ")
    assert merge({"jobs": 5}, tmp_path).jobs == 3


@pytest.mark.parametrize(("variables", "remote", "write"), [
    ({}, "s3://b/p", False),
    ({"FIGGEN_REMOTE_WRITE": "1"}, "s3://b/p", True),
    ({"FIGGEN_REMOTE_WRITE": "0"}, "s3://b/p", False),
    ({"FIGGEN_REMOTE": "gs://c/q", "FIGGEN_REMOTE_WRITE": "true"}, "gs://c/q", True),
    ({"FIGGEN_REMOTE": ""}, None, False),  # a CI secret that is not set: no remote
])
def test_the_remote_and_its_writing_come_from_the_settings_or_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variables: dict, remote: object, write: bool
) -> None:
    for variable in ("FIGGEN_REMOTE", "FIGGEN_REMOTE_WRITE"):
        monkeypatch.delenv(variable, raising=False)
    for variable, value in variables.items():
        monkeypatch.setenv(variable, value)
    s = merge({"remote": "s3://b/p"}, tmp_path)
    assert (s.remote, s.remote_write) == (remote, write)
    assert merge({}, tmp_path).remote == (variables.get("FIGGEN_REMOTE") or None)


@pytest.mark.parametrize(("declared", "cause"), [
    ("{'timeout': 0}", "__figure__\\['timeout'\\] is 0; expected a number of seconds > 0"),
    ("{'timeout': -1}", "__figure__\\['timeout'\\] is -1; expected a number of seconds > 0"),
    ("{'timeout': True}", "__figure__\\['timeout'\\] is True; expected a number of seconds"),
    ("{'data': 'points.txt'}", "__figure__\\['data'\\] is 'points.txt'; expected a list of"),
    ("{'data': [1]}", "__figure__\\['data'\\] is \\[1\\]; expected a list of data file paths"),
    ("{'gpu': 1}", "__figure__\\['gpu'\\] is 1; expected True or False"),
    ("{'gpus': True}", "__figure__ has unknown key 'gpus' \\(known: data, timeout, gpu\\)"),
    ("5", "__figure__ must be a literal dict"),
    ("[('timeout', 5)]", "__figure__ must be a literal dict"),
    ("{[1]: 2}", "__figure__ must be a literal dict"),
    ("dict(timeout=5)", "__figure__ must be a literal dict"),
])
def test_a_wrong_declaration_names_the_script_the_field_and_what_it_accepts(
    tmp_path: Path, declared: str, cause: str
) -> None:
    script = tmp_path / "f.py"
    script.write_text(f"__figure__ = {declared}\n")
    with pytest.raises(FigureError, match=f"^post.md: figure 'f': f.py: {cause}"):
        discover.declarations(script, "post.md", "f")


def test_a_good_declaration_is_read(tmp_path: Path) -> None:
    script = tmp_path / "f.py"
    script.write_text("__figure__ = {'data': ['a.txt'], 'timeout': 1.5, 'gpu': True}\n")
    assert discover.declarations(script, "post.md", "f") == {
        "data": ["a.txt"], "timeout": 1.5, "gpu": True}


# Through the build, as a user runs it.

def test_a_wrong_setting_stops_the_build_with_one_line_and_no_traceback(site: Site) -> None:
    site.append("pelicanconf.py", 'FIGGEN = {"scripts": "figs", "timeout": "abc"}\n')
    result = site.build_cli()
    out = result.stdout + result.stderr
    assert result.returncode == 1
    assert "FIGGEN['timeout'] is 'abc'; expected a number of seconds > 0" in out
    assert "Traceback" not in out and "CRITICAL" not in out
    assert not (site.root / "output" / "a-tiny-post.html").exists()


def test_a_wrong_environment_override_stops_the_build_and_the_command_line(site: Site) -> None:
    for run in (site.build_cli, lambda **kw: site.figgen("list", **kw)):
        result = run(env={"FIGGEN_JOBS": "0"})
        out = result.stdout + result.stderr
        assert result.returncode == 1
        assert "FIGGEN_JOBS (FIGGEN['jobs']) is '0'; expected a whole number >= 1" in out
        assert "Traceback" not in out


def test_a_figure_declaring_a_zero_time_out_fails_naming_its_script(site: Site) -> None:
    site.write("figs/beta.py", '__figure__ = {"timeout": 0}\n'
               + site.root.joinpath("figs/beta.py").read_text())
    with pytest.raises(FigureBuildError) as err:
        site.build()
    (error,) = err.value.errors
    assert (error.article, error.reference) == ("content/post.md", "beta")
    assert error.cause == "beta.py: __figure__['timeout'] is 0; expected a number of seconds > 0"
    assert sorted(site.report()["ran"]) == ["alpha", "gamma"]  # the others were still made
