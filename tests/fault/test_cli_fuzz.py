"""Any arguments, paths and config files: every command answers with exit 0, 1 or 2 and
never a traceback (run in-process, through the console entry point's error handling)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fault.conftest import assert_one_line_error
from tests.report.conftest import make_run


@pytest.fixture(scope="module")
def places(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("places")
    make_run(root / "good", steps=12)
    (root / "file.txt").write_text("hello")
    (root / "empty").mkdir()
    os.symlink(root / "loop-a", root / "loop-b")
    os.symlink(root / "loop-b", root / "loop-a")
    return {
        "good": str(root / "good"), "file": str(root / "file.txt"), "empty": str(root / "empty"),
        "loop": str(root / "loop-a"), "missing": str(root / "missing"), "long": str(root / ("x" * 300)),
        "zero": "/dev/zero", "root": "/", "blank": "", "unicode": str(root / "r\u00e9\u2603 run"),
        "out": str(root / "out.html"), "deep": str(root / "no" / "such" / "dir" / "f.html"),
    }


PLACE = st.sampled_from(["good", "file", "empty", "loop", "missing", "long", "zero", "root", "blank",
                         "unicode", "out", "deep"])
TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"), max_size=40)
CONFIG = st.one_of(
    st.binary(max_size=200),
    TEXT.map(str.encode),
    st.sampled_from([b"[[rule]]\nmetric = 'noise.b_simple.last < 4096'\n", b"rule = 5\n", b"[[rule]]\n",
                     b"[[rule]]\nmetric = 'x <'\n",
                     b"[[rule]]\nmetric = 'noise.b_simple.last < 1'\nwhy = 3\n"]),
)


VALID = {
    "--format": ["json", "csv", "table"], "--family": ["noise", "stability", "coherence"],
    "--rule": ["noise.b_simple.last < 4096", "stability.loss.last > 100", "verdict.* != alert"],
    "--every": ["1", "3"],
}


def _option(draw: st.DrawFn, name: str, places: dict[str, str]) -> list[str]:
    valid = [places["out"]] if name in ("--html", "--out") else VALID.get(name, ["x"])
    value = draw(st.one_of(st.sampled_from(valid), PLACE.map(places.get), TEXT,
                           st.integers(-5, 10**6).map(str)))
    return [name, value]


@st.composite
def invocations(draw: st.DrawFn, places: dict[str, str], config_dir: Path) -> list[str]:
    command = draw(st.sampled_from(["report", "metrics", "check", "compare", "record", "bogus"]))
    argv = [command]
    if command == "record":  # only commands that cannot run: the fuzzer never starts a program
        argv += [*(_option(draw, "--out", places) if draw(st.booleans()) else []), "--"]
        argv += [draw(st.sampled_from(["", " ", places["empty"], places["file"], places["missing"],
                                       "gradscope-no-such-command", places["long"]]))]
        return argv
    count = 2 if command == "compare" else 1
    positional = draw(st.sampled_from([count] * 6 + [0, count + 1]))
    argv += [places[draw(st.one_of(st.just("good"), PLACE))] for _ in range(positional)]
    usual = {"report": ["--html", "--no-color", "--quiet"], "metrics": ["--out", "--format", "--family"],
             "check": ["--rule", "--config", "--format"], "compare": ["--html", "--no-color"]}
    names = st.one_of(st.sampled_from(usual.get(command, ["--html"])), st.sampled_from(
        ["--html", "--out", "--format", "--family", "--rule", "--config", "--no-color", "--quiet"]))
    for name in draw(st.lists(names, max_size=3)):
        if name == "--config" and draw(st.booleans()):
            path = config_dir / f"c{draw(st.integers(0, 5))}.toml"
            path.write_bytes(draw(CONFIG))
            argv += [name, str(path)]
        elif name in ("--no-color", "--quiet"):
            argv.append(name)
        else:
            argv += _option(draw, name, places)
    return argv


@pytest.mark.slow
def test_no_argument_gives_a_traceback(places, cli, tmp_path_factory, monkeypatch):
    config_dir = tmp_path_factory.mktemp("configs")
    # generated --html/--out names are relative: keep them out of the repository root
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(invocations(places, config_dir))
    def check(argv: list[str]) -> None:
        code, out, err = cli(*argv)
        if os.environ.get("GS_FUZZ_LOG"):
            print("FUZZ", code, argv[:4], err[:100].replace("\n", " "), file=sys.__stderr__)
        assert code in (0, 1, 2), (argv, code, err)
        assert "Traceback" not in err and "internal error" not in err, (argv, err)

    check()


@pytest.mark.parametrize("argv, words", [
    (["report", "LONG"], "File name too long"),
    (["report", "LOOP"], "symbolic links"),
    (["record", "--", ""], "empty"),
    (["record", "--", "EMPTY"], "is a directory"),
    (["check", "GOOD", "--config", "/dev/zero"], "not a regular file"),
    (["check", "GOOD", "--config", "BIG"], "larger than 1 MiB"),
    (["report", "GOOD", "--html", "DEEP"], "folder does not exist"),
    (["metrics", "GOOD", "--out", "EMPTY"], "is a directory"),
])
def test_named_bad_inputs_are_one_line(places, cli, tmp_path, argv, words):
    big = tmp_path / "big.toml"
    big.write_bytes(b"#" * (1024 * 1024 + 1))
    names = {"LONG": places["long"], "LOOP": places["loop"], "EMPTY": places["empty"],
             "GOOD": places["good"], "DEEP": places["deep"], "BIG": str(big)}
    code, out, err = cli(*[names.get(a, a) for a in argv])
    assert_one_line_error(code, err)
    assert words in err


def test_an_output_file_never_overwrites_the_run_being_read(cli, run_copy):
    """`report RUN --html RUN/meta.json` used to replace the run's card with HTML."""
    from tests.fault.conftest import assert_one_line_error

    run = run_copy("run")
    card = (run / "meta.json").read_bytes()
    shard = next((run / "steps").glob("rank-*/part-*.parquet"))
    for argv in (("report", str(run), "--html", str(run / "meta.json")),
                 ("report", str(run), "--html", str(run / "events.jsonl")),
                 ("metrics", str(run), "--out", str(shard)),
                 ("compare", str(run), str(run), "--html", str(run / "meta.json"))):
        code, _, err = cli(*argv)
        assert_one_line_error(code, err)
        assert "overwrite the run's own data" in err
    assert (run / "meta.json").read_bytes() == card
