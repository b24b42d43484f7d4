"""``gradscope metrics``' stderr lines: a family whose rows were written but whose verdict
could not be judged says so, never "no data" next to its own rows."""

import pandas as pd

from gradscope.analysis.engine import Analysis
from gradscope.analysis.types import METRIC_COLUMNS, TOO_FEW_EPOCHS, Verdict, no_data
from gradscope.report.export import state_lines


def test_rows_written_without_a_verdict_are_not_called_no_data():
    rows = pd.DataFrame([{"run": "", "step": s, "family": "alignment", "name": "gwa", "scope": "model",
                          "key": "", "value": 0.1} for s in range(3)])[list(METRIC_COLUMNS)]
    verdicts = (no_data("alignment", TOO_FEW_EPOCHS, "the GWA epoch score needs 2 epochs; the run has 1"),
                no_data("noise", TOO_FEW_EPOCHS, "nothing"), Verdict("stability", "ok", "fine"))
    lines = state_lines(Analysis(rows, verdicts, pd.DataFrame()))
    assert lines == ["alignment: 3 metric rows written, no verdict: the GWA epoch score needs 2 epochs; "
                     "the run has 1", "noise: no data: nothing"]
