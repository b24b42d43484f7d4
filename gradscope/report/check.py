"""``gradscope check``: evaluate rules (rules.py) against a run's analysis.

Semantics of a metric rule ``family.name[selector].aggregation OP number``:

- Rows: the metric's rows at model scope when there is no selector, else the rows whose
  (scope, key) matches any selector item (glob patterns; an item without a scope matches
  every scope but model). Whole-run rows (step -1) are included.
- Each selected key is aggregated over its steps (in step order) and compared on its
  own; the rule passes when every key passes, and reports the failing key (or, when
  all pass, the key nearest the threshold).
- Steps between recorded ones (``record --every N``: nan off the cadence, see cadence.py)
  are left out; last / first take the value as recorded: a NaN there fails the comparison. min, max,
  mean, median, p95 skip NaN (non-finite values are caught by ``stability.nonfinite``);
  count is the number of non-NaN values; any / all apply the comparison to each value
  and pass when one / every value satisfies it (the value shown is how many did).
- A rule whose metric has no rows cannot be evaluated: status "missing". That is bad
  input (exit 2) unless the rule is ``optional`` or ``--allow-missing`` is given, when
  it is reported as skipped. Otherwise exit 1 when any rule fails, 0 when all pass.

A verdict rule ``verdict.<family|*> OP level`` compares the family's verdict level (the
worst one for ``*``) with ok < warn < alert.

The states that are not levels (gradscope.analysis.types):

- A run with no recorded step (the recorder never started or saw no backward pass, the
  run crashed before its first step, or no step was seen): every rule fails, with the
  reason (exit 1). A run that cannot be read at all is bad input (exit 2).
- A family whose analysis failed: every rule on it fails (and ``verdict.*`` fails).
- A family with no data (not recorded, profile, too few epochs): a verdict rule on it is
  skipped with the reason; ``verdict.*`` judges the families that have data (skipped when
  none has). A metric rule on it has no rows: "missing", as above.
- A metric (or a selected key) with no value on any step was never computed: it is left
  out, and a rule with only such keys is skipped, never failed (``count`` still counts 0).
- A metric that needs more history than the run has (thresholds.HISTORY, e.g. spike
  z-scores need 11 steps) and has no value: the rule is skipped with that reason.

Skipped rules are printed with their reason; they never count as passed in the JSON.
"""

from __future__ import annotations

import difflib
import fnmatch
import json
import math
import operator
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from gradscope.analysis.engine import Analysis
from gradscope.analysis.names import METRICS
from gradscope.analysis.thresholds import HISTORY
from gradscope.analysis.types import FAILED, LEVELS, NO_DATA
from gradscope.errors import GradscopeError
from gradscope.report import cadence
from gradscope.report.rules import Rule, parse_rule
from gradscope.report.sections import HIDDEN

Status = Literal["pass", "fail", "missing", "skipped"]
COMPARE: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt, "<=": operator.le, ">": operator.gt,
    ">=": operator.ge, "==": operator.eq, "!=": operator.ne,
}
STATUS_STYLE = {"pass": "green", "fail": "bold red", "missing": "bold magenta", "skipped": "dim"}


@dataclass(frozen=True)
class Outcome:
    rule: Rule
    status: Status
    value: float = math.nan
    shown: str = "-"  # the value as printed
    key: str = ""  # the key that decided (failing, or nearest the threshold)
    note: str = ""


def load_config(path: Path) -> list[Rule]:
    """Rules from a TOML file: ``[[rule]]`` tables with ``metric`` (the rule text), and
    optional ``why`` (a comment shown with failures) and ``optional`` (missing is ok)."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # Python 3.10: the same parser, packaged (a conditional dependency in pyproject.toml)
        import tomli as tomllib
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise GradscopeError(f"cannot read config {path}: {err.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise GradscopeError(f"{path} is not valid TOML: {err}") from None
    extra = set(document) - {"rule"}
    if extra:  # e.g. [[rules]]: its rules would be silently skipped
        raise GradscopeError(f"{path}: unknown key {sorted(extra)[0]!r} (rules go in [[rule]] tables)")
    entries = document.get("rule", [])
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise GradscopeError(f"{path}: 'rule' must be an array of tables ([[rule]])")
    rules = []
    for number, entry in enumerate(entries, 1):
        unknown = set(entry) - {"metric", "why", "optional"}
        if unknown or not isinstance(entry.get("metric"), str):
            problem = f"unknown key {sorted(unknown)[0]!r}" if unknown else "needs metric = \"...\""
            if unknown & {"rule", "rules", "name", "expr", "expression", "check"}:
                problem += " (the rule text goes in metric = \"...\")"
            raise GradscopeError(f"{path}: rule #{number} {problem}")
        if not isinstance(entry.get("optional", False), bool) or not isinstance(entry.get("why", ""), str):
            # optional = "no" would be truthy and skip a required gate
            raise GradscopeError(f"{path}: rule #{number} needs optional = true/false and why = \"...\"")
        rules.append(parse_rule(entry["metric"], why=str(entry.get("why", "")),
                                optional=bool(entry.get("optional", False))))
    return rules


def gather_rules(configs: Sequence[Path], texts: Sequence[str]) -> list[Rule]:
    rules = [rule for path in configs for rule in load_config(path)] + [parse_rule(t) for t in texts]
    if not rules:
        raise GradscopeError("no rules to check: pass --config FILE or --rule 'noise.b_simple < 4096'")
    return rules


def aggregate(values: np.ndarray, how: str) -> float:
    """One number from a key's values in step order (see the module docstring)."""
    if how in ("last", "first"):
        return float(values[-1] if how == "last" else values[0]) if values.size else math.nan
    known = values[~np.isnan(values)]
    if how == "count":
        return float(known.size)
    if not known.size:
        return math.nan
    reducers = {"min": np.min, "max": np.max, "mean": np.mean, "median": np.median,
                "p95": lambda v: np.percentile(v, 95)}
    return float(reducers[how](known))


def selected(rule: Rule, metrics: pd.DataFrame) -> pd.DataFrame:
    rows = metrics[(metrics["family"] == rule.family) & (metrics["name"] == rule.name)]
    if not rule.selectors:
        return rows[rows["scope"] == "model"]
    keep = np.zeros(len(rows), dtype=bool)
    for item in rule.selectors:
        scope_ok = (rows["scope"] == item.scope if item.scope else rows["scope"] != "model").to_numpy(bool)
        key_ok = np.array([fnmatch.fnmatchcase(str(k), item.pattern) for k in rows["key"]], dtype=bool)
        keep |= scope_ok & key_ok
    return rows[keep]


def _judge_key(rule: Rule, values: np.ndarray) -> tuple[bool, float, str]:
    compare = COMPARE[rule.op]
    if rule.aggregation in ("any", "all"):
        known = values[~np.isnan(values)]
        hits = sum(compare(float(v), rule.threshold) for v in known)
        passed = hits > 0 if rule.aggregation == "any" else known.size > 0 and hits == known.size
        return passed, float(hits), f"{hits}/{known.size} steps"
    value = aggregate(values, rule.aggregation)
    return compare(value, rule.threshold), value, f"{value:.4g}"


def evaluate_metric(rule: Rule, metrics: pd.DataFrame) -> Outcome:
    rows = selected(rule, metrics)
    unmatched = _no_key_matched(rule, metrics) if rows.empty else ""
    if unmatched:
        return Outcome(rule, "missing", note=unmatched)
    if rows.empty:
        has = sorted(set(metrics.loc[metrics["family"] == rule.family, "name"].astype(str)) - HIDDEN)
        listed = f"; {rule.family} has {', '.join(has[:8])}{', ...' if len(has) > 8 else ''}" if has else ""
        return Outcome(rule, "missing", note=f"no values for {rule.family}.{rule.name} in this run{listed}")
    series = {}
    for (scope, key), block in rows.groupby(["scope", "key"], sort=True):
        block = block.sort_values("step")
        _, values, _ = cadence.recorded(block["step"].to_numpy(), block["value"].to_numpy(float))
        series[_label(str(scope), str(key))] = values
    if rule.aggregation != "count":  # a key never computed (nan on every step) is no data, not a fail
        series = {k: v for k, v in series.items() if not np.isnan(v).all()}
    if not series:
        return Outcome(rule, "skipped", note=f"{rule.family}.{rule.name} was never computed in this run "
                       "(no value on any step): nothing to judge")
    judged = {k: _judge_key(rule, v) for k, v in series.items()}
    failed = [(k, j) for k, j in judged.items() if not j[0]]
    if failed:
        key, (_, value, shown) = failed[0]
        note = f"{len(failed)} of {len(judged)} keys fail" if len(judged) > 1 else ""
        return Outcome(rule, "fail", value, shown, key, note)
    key, (_, value, shown) = min(judged.items(), key=lambda kv: _distance(kv[1][1], rule.threshold))
    note = f"all {len(judged)} keys pass" if len(judged) > 1 else ""
    return Outcome(rule, "pass", value, shown, key, note)


def _no_key_matched(rule: Rule, metrics: pd.DataFrame) -> str:
    """When the run has the metric but the selector matched none of its keys: which
    pattern matched nothing, and a few of the keys there are ("" otherwise)."""
    rows = metrics[(metrics["family"] == rule.family) & (metrics["name"] == rule.name)
                   & (metrics["scope"] != "model")]
    if not rule.selectors or rows.empty:
        return ""
    scopes = {item.scope for item in rule.selectors} - {None}
    pool = rows[rows["scope"].isin(scopes)] if scopes else rows
    what = " or ".join(sorted(scopes)) if scopes else "key"
    keys = list(dict.fromkeys(str(k) for k in (pool if not pool.empty else rows)["key"]))
    patterns = " or ".join(repr(item.pattern) for item in rule.selectors)
    listed = ", ".join(keys[:5]) + (f", ... ({len(keys)} in all)" if len(keys) > 5 else "")
    return f"no {what} matched {patterns} for {rule.family}.{rule.name}; there are {listed}"


def _label(scope: str, key: str) -> str:
    """How a selected key is named in the output: 'scope=key' ('' at model scope)."""
    return "" if scope == "model" else f"{scope}={key}"


def _distance(value: float, threshold: float) -> float:
    gap = abs(value - threshold)
    return gap if math.isfinite(gap) else math.inf


def evaluate_verdict(rule: Rule, analysis: Analysis) -> Outcome:
    """ok < warn < alert compared on the judged verdicts; a FAILED family fails the rule;
    families with no data are left out, and a rule that has only those is skipped."""
    verdicts = [v for v in analysis.verdicts if rule.name in ("*", v.family)]
    if not verdicts:
        return Outcome(rule, "missing", note=f"no verdict for {rule.name}")
    broken = [v for v in verdicts if v.level == FAILED]
    if broken:
        return Outcome(rule, "fail", math.nan, FAILED, broken[0].family, broken[0].summary)
    judged = [v for v in verdicts if v.judged]
    if not judged:
        note = "; ".join(f"{v.family}: {v.summary}" for v in verdicts)
        return Outcome(rule, "skipped", math.nan, NO_DATA, verdicts[0].family if len(verdicts) == 1 else "",
                       note)
    worst = max(judged, key=lambda v: LEVELS.index(v.level))
    level = LEVELS.index(worst.level)
    passed = COMPARE[rule.op](level, int(rule.threshold))
    unjudged = [v.family for v in verdicts if not v.judged]
    note = "" if passed else worst.summary
    if unjudged and rule.name == "*":
        note = "; ".join(p for p in (note, f"no data in {', '.join(unjudged)}") if p)
    return Outcome(rule, "pass" if passed else "fail", float(level), worst.level, worst.family, note)


def _short_history(rule: Rule, analysis: Analysis) -> str:
    """Why a metric has no finite value in a run too short for it ("" when it is long enough)."""
    unit, needed = HISTORY.get(f"{rule.family}.{rule.name}", ("steps", 0))
    if unit != "steps" or analysis.recorded_steps >= needed:
        return ""
    return (f"{rule.family}.{rule.name} needs {needed} recorded steps of history; "
            f"the run has {analysis.recorded_steps}")


def evaluate(rule: Rule, analysis: Analysis) -> Outcome:
    """One rule against the analysis: the run's and the family's state first (see the
    module docstring), then the verdict or the metric values."""
    if analysis.gap:
        return Outcome(rule, "fail", shown=NO_DATA, note=f"no data: {analysis.gap}")
    if rule.is_verdict:
        return evaluate_verdict(rule, analysis)
    verdict = analysis.verdict(rule.family)
    if verdict is not None and verdict.level == FAILED:
        return Outcome(rule, "fail", shown=FAILED, note=f"{rule.family} {verdict.summary}")
    outcome = evaluate_metric(rule, analysis.metrics)
    if outcome.status == "missing" and verdict is not None and verdict.level == NO_DATA:
        outcome = replace(outcome, note=f"{outcome.note} ({rule.family} {verdict.summary})")
    short = _short_history(rule, analysis)
    if short and outcome.status != "missing" and _all_nan(rule, analysis.metrics):
        return Outcome(rule, "skipped", shown="-", note=short)
    return outcome


def _all_nan(rule: Rule, metrics: pd.DataFrame) -> bool:
    return bool(selected(rule, metrics)["value"].isna().all())


def known_names(family: str, metrics: pd.DataFrame) -> set[str]:
    """Metric names of ``family``: every name the analysis can produce (analysis/names.py),
    and any this run's table holds (a metric newer than the list is still accepted)."""
    return set(METRICS.get(family, ())) | set(metrics.loc[metrics["family"] == family, "name"].astype(str))


def unknown_metric(rule: Rule, metrics: pd.DataFrame) -> str:
    """'' for a metric gradscope can produce; else a one-line error, with a "did you mean"
    when one is close (difflib): bad input (exit 2) whether the rule is optional or not,
    for ``--allow-missing`` / ``optional`` excuse a metric the run lacks, not a wrong name."""
    if rule.is_verdict:
        return ""
    names = known_names(rule.family, metrics)
    if rule.name in names:
        return ""
    close = (difflib.get_close_matches(rule.name, sorted(names), n=3, cutoff=0.75)
             or difflib.get_close_matches(rule.name, sorted(names), n=1, cutoff=0.6))
    if close:
        hint = "did you mean " + " or ".join(f"{rule.family}.{name}" for name in close) + "?"
    else:
        hint = f"{rule.family} has " + ", ".join(sorted(names - HIDDEN))
    return f"rule {rule.text!r}: unknown metric {rule.family}.{rule.name} ({hint})"


def run_checks(rules: Sequence[Rule], analysis: Analysis, allow_missing: bool = False) -> list[Outcome]:
    outcomes = []
    for rule in rules:
        typo = unknown_metric(rule, analysis.metrics)
        if typo:
            raise GradscopeError(typo)
        outcome = evaluate(rule, analysis)
        if outcome.status == "missing" and (allow_missing or rule.optional):
            outcome = Outcome(rule, "skipped", note=outcome.note)
        outcomes.append(outcome)
    return outcomes


def exit_code(outcomes: Sequence[Outcome]) -> int:
    """2 when a rule could not be evaluated, else 1 when one failed, else 0."""
    statuses = {o.status for o in outcomes}
    return 2 if "missing" in statuses else 1 if "fail" in statuses else 0


def missing_message(outcomes: Sequence[Outcome]) -> str:
    missing = [o for o in outcomes if o.status == "missing"]
    first = missing[0]
    why = "check the selector" if " matched " in first.note else "the run did not record it"
    return (f"{len(missing)} rule(s) cannot be evaluated, e.g. {first.rule.text!r}: {first.note} "
            f"({why}; mark the rule optional = true or pass --allow-missing)")


def outcome_table(outcomes: Sequence[Outcome], run: str) -> RenderableType:
    """Result, rule (with the key that decided under it), value, threshold; then one line
    per rule that did not pass. No key column: rules stay whole at 80 columns."""
    table = Table(title=f"gradscope check {run}", title_justify="left", header_style="bold", show_edge=False)
    table.add_column("result", no_wrap=True)
    table.add_column("rule (key that decided)", overflow="fold", ratio=1)
    for column in ("value", "threshold"):
        table.add_column(column, justify="right", no_wrap=True)
    notes: list[RenderableType] = []
    for o in outcomes:
        style = STATUS_STYLE[o.status]
        rule = Text(o.rule.text)
        if o.key and o.key != o.rule.name:  # verdict.stability: the key says nothing new
            rule.append(f"\n  at {o.key}", style="dim")
        table.add_row(Text(o.status, style=style), rule, o.shown, f"{o.rule.op} {o.rule.threshold_text}")
        if o.status != "pass":
            line = Text(f"{o.status}: ", style=style)
            line.append(o.rule.text, style="bold")
            why = f"why: {o.rule.why}" if o.rule.why and o.status == "fail" else ""
            line.append("".join(f"  {part}" for part in (o.note, why) if part))
            notes.append(line)
    return Group(table, *notes)


def outcomes_json(outcomes: Sequence[Outcome], run: str) -> str:
    records = [
        {"rule": o.rule.text, "status": o.status, "key": o.key,
         "value": o.value if math.isfinite(o.value) else None, "shown": o.shown, "op": o.rule.op,
         "threshold": o.rule.threshold_text if o.rule.is_verdict or math.isinf(o.rule.threshold)
         else o.rule.threshold,
         "why": o.rule.why, "note": o.note}
        for o in outcomes
    ]
    return json.dumps({"run": run, "exit_code": exit_code(outcomes), "rules": records}, indent=2)


def write_json(outcomes: Sequence[Outcome], run: str) -> None:
    sys.stdout.write(outcomes_json(outcomes, run) + "\n")
