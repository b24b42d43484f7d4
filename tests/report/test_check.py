"""`gradscope check`: the rule grammar, its evaluation and the exit codes 0 / 1 / 2."""

from __future__ import annotations

import io
import json
import re
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from unittest.mock import patch

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from gradscope.analysis.run import analyze_run
from gradscope.cli import app, main
from gradscope.errors import GradscopeError
from gradscope.report.check import aggregate, load_config, run_checks
from gradscope.report.rules import Selector, parse_rule
from gradscope.store.reader import open_run

runner = CliRunner()
REPO = Path(__file__).resolve().parents[2]


def run_main(args: list[str]) -> tuple[int, str, str]:
    """Run the console entry point (which maps GradscopeError to exit 2) in-process."""
    out, err = io.StringIO(), io.StringIO()
    with patch.object(sys, "argv", ["gradscope", *args]), redirect_stdout(out), redirect_stderr(err):
        try:
            main()
            code = 0
        except SystemExit as done:
            code = done.code if isinstance(done.code, int) else int(done.code is not None)
    return code, out.getvalue(), err.getvalue()


# ------------------------------------------------------------------------------- grammar
def test_parse_full_rule() -> None:
    rule = parse_rule("stability.update_ratio[layer=fc1, layer=\"a,b\"].max < 1e-2")
    assert (rule.family, rule.name, rule.aggregation, rule.op, rule.threshold) == (
        "stability", "update_ratio", "max", "<", 1e-2)
    assert rule.selectors == (Selector("layer", "fc1"), Selector("layer", "a,b"))


def test_defaults_and_verdicts() -> None:
    assert parse_rule("noise.b_simple < 4096").aggregation == "last"
    assert parse_rule("conflict.cos[seg|depth].min > -0.5").selectors == (Selector(None, "seg|depth"),)
    verdict = parse_rule("verdict.* <= warn")
    assert verdict.is_verdict and verdict.name == "*" and verdict.threshold == 1.0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("noise.b_simple.lst < 3", "unknown aggregation 'lst' (did you mean last? one of last, first, min, "
         "max, mean, median, p95, any, all, count) at position 16"),
        ("noise.b_simple <", "expected a number at position 17"),
        ("nose.b < 1", "unknown family 'nose'"),
        ("noise.b[lay=x] < 1", "unknown scope 'lay'"),
        ("noise.b[x < 1", "expected ',' or ']'"),
        ("verdict.noise == bad", "unknown level 'bad'"),
        ("noise.b < 1 and more", "unexpected text after the rule at position 13"),
    ],
)
def test_bad_rules_name_rule_and_position(text: str, message: str) -> None:
    with pytest.raises(GradscopeError, match="rule .*" + re.escape(message)):
        parse_rule(text)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80) | st.from_regex(r"[a-z_.\[\]=|*,\"<>!= 0-9e\-]{0,40}", fullmatch=True))
def test_parser_raises_only_gradscope_error(text: str) -> None:
    try:
        parse_rule(text)
    except GradscopeError as err:
        assert "\n" not in str(err).replace(repr(text), "")


def test_aggregations() -> None:
    import numpy as np

    values = np.array([3.0, np.nan, 1.0, 2.0])
    assert aggregate(values, "first") == 3.0 and aggregate(values, "min") == 1.0
    assert aggregate(values, "count") == 3.0 and aggregate(values, "median") == 2.0
    assert np.isnan(aggregate(np.array([1.0, np.nan]), "last"))


# ------------------------------------------------------------------------------- evaluation
def test_rules_against_synthetic_run(synthetic_run: Path) -> None:
    analysis = analyze_run(open_run(synthetic_run))
    texts = {
        "noise.b_simple.last < 4096": "pass",
        "stability.update_ratio[layer=*].max < 1e-2": "pass",
        "stability.update_ratio[layer=fc1].max > 1": "fail",
        "conflict.cos[seg|*].median > -0.5": "fail",
        "conflict.cos[task_pair=*].median > -0.8": "pass",
        "stability.loss.any > 3": "pass",
        "stability.loss.all < 3": "fail",
        "stability.loss.count == 24": "pass",
        "verdict.conflict == alert": "pass",
        "verdict.* <= warn": "fail",
        "noise.b_simple_ddp < 1": "missing",  # a real metric this (single-process) run lacks
    }
    outcomes = run_checks([parse_rule(t) for t in texts], analysis)
    assert {o.rule.text: o.status for o in outcomes} == texts
    failed = next(o for o in outcomes if o.rule.text.startswith("conflict.cos[seg"))
    assert failed.key == 'task_pair=seg|"><img src=x>' and failed.value < -0.5


def test_cli_exit_0_and_1(synthetic_run: Path) -> None:
    ok = runner.invoke(app, ["check", str(synthetic_run), "--rule", "noise.b_simple.last < 4096"])
    assert ok.exit_code == 0, ok.output
    assert "pass" in ok.output and "< 4096" in ok.output
    bad = runner.invoke(app, ["check", str(synthetic_run), "-r", "verdict.conflict != alert"])
    assert bad.exit_code == 1 and "fail" in bad.output and "strong conflict" in bad.output


def test_cli_json(synthetic_run: Path) -> None:
    result = runner.invoke(app, ["check", str(synthetic_run), "-r", "stability.loss.max < 1",
                                 "--format", "json"])
    payload = json.loads(result.stdout)
    assert result.exit_code == 1 and payload["exit_code"] == 1
    assert payload["rules"][0]["status"] == "fail" and payload["rules"][0]["threshold"] == 1.0


def test_missing_metric_is_exit_2_unless_allowed(minimal_run: Path) -> None:
    code, out, err = run_main(["check", str(minimal_run), "-r", "noise.b_simple < 4096", "--no-color"])
    assert code == 2 and "missing" in out
    assert "cannot be evaluated" in err and "--allow-missing" in err
    args = ["check", str(minimal_run), "-r", "noise.b_simple < 4096", "--allow-missing"]
    allowed = runner.invoke(app, args)
    assert allowed.exit_code == 0 and "skipped" in allowed.output


def test_bad_rule_text_is_exit_2(synthetic_run: Path) -> None:
    code, _, err = run_main(["check", str(synthetic_run), "-r", "noise.b_simple << 4"])
    assert code == 2
    assert err.strip() == "gradscope: error: rule 'noise.b_simple << 4': expected a number at position 17"


def test_no_rules_is_exit_2(synthetic_run: Path) -> None:
    code, _, err = run_main(["check", str(synthetic_run)])
    assert code == 2 and "no rules" in err


@pytest.mark.parametrize("name", ["default.toml", "strict.toml"])
def test_shipped_configs_parse_and_run(name: str, synthetic_run: Path, minimal_run: Path) -> None:
    rules = load_config(REPO / "configs" / name)
    assert rules and all(r.why or r.is_verdict for r in rules)
    for run in (synthetic_run, minimal_run):
        result = runner.invoke(app, ["check", str(run), "--config", str(REPO / "configs" / name)])
        assert result.exit_code in (0, 1), result.output  # never "cannot evaluate": optional rules


def test_config_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[[rule]]\nmetrc = 'noise.b_simple < 1'\n")
    with pytest.raises(GradscopeError, match="rule #1 unknown key 'metrc'"):
        load_config(bad)
    bad.write_text("[[rule]\n")
    with pytest.raises(GradscopeError, match="not valid TOML"):
        load_config(bad)
    bad.write_text("[[rule]]\nmetric = 'noise.b_simple < 1'\noptional = 'no'\n")
    with pytest.raises(GradscopeError, match="optional = true/false"):
        load_config(bad)  # a truthy string would have skipped a required gate
    bad.write_text("[[rules]]\nmetric = 'noise.b_simple < 1'\n")
    with pytest.raises(GradscopeError, match="unknown key 'rules'"):
        load_config(bad)


@pytest.mark.parametrize("extra", [[], ["--allow-missing"]])
def test_invented_metric_is_exit_2_even_when_allowed_missing(synthetic_run: Path, extra: list[str]) -> None:
    code, out, err = run_main(["check", str(synthetic_run), "--rule", "noise.foo.last < 1", *extra])
    assert code == 2 and "unknown metric noise.foo" in err and "noise has b_simple" in err
    code, _, err = run_main(["check", str(synthetic_run), "--rule", "noise.b_simpel < 1", *extra])
    assert code == 2 and "did you mean noise.b_simple" in err


def test_invented_metric_in_an_optional_config_rule_is_exit_2(synthetic_run: Path, tmp_path: Path) -> None:
    config = tmp_path / "gates.toml"
    config.write_text('[[rule]]\nmetric = "conflict.cosine.min > -0.5"\noptional = true\n')
    code, _, err = run_main(["check", str(synthetic_run), "--config", str(config)])
    assert code == 2 and "unknown metric conflict.cosine" in err and "did you mean conflict.cos" in err
    config.write_text('[[rule]]\nmetric = "conflict.sample_cos.min > -0.5"\noptional = true\n')
    code, _, _ = run_main(["check", str(synthetic_run), "--config", str(config)])
    assert code in (0, 1)  # a real metric, recorded or skipped as missing


def test_selector_matching_no_layer_names_the_pattern_and_the_layers(synthetic_run: Path) -> None:
    code, out, err = run_main(["check", str(synthetic_run), "--rule",
                               "stability.grad_norm[layer=transformer.h.9*].max < 10"])
    text = " ".join((out + err).split())
    assert code == 2 and "no layer matched 'transformer.h.9*'" in text and "fc1" in text
    assert "stability has" not in text
