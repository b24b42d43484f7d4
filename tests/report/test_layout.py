"""layout.py: names lose their middle, columns fold into continuation tables, nothing is cropped."""

from __future__ import annotations

import io

from hypothesis import given
from hypothesis import strategies as st
from rich.console import Console

from gradscope.report.layout import ELLIPSIS, Column, abbreviate, abbreviate_all, folded_table


@given(st.text(min_size=0, max_size=80), st.integers(min_value=2, max_value=60))
def test_abbreviate_keeps_both_ends(text: str, width: int) -> None:
    short = abbreviate(text, width)
    assert len(short) <= width
    if len(text) <= width:
        assert short == text
    else:
        head, tail = short.split(ELLIPSIS, 1)
        assert text.startswith(head) and text.endswith(tail) and len(tail) >= len(head)


def render(renderable: object, width: int) -> list[str]:
    out = io.StringIO()
    Console(file=out, width=width, no_color=True, color_system=None).print(renderable)
    return [line.rstrip() for line in out.getvalue().splitlines()]


def test_wide_table_folds_without_cropping() -> None:
    names = ["transformer.h.11.attn.c_attn", "lm_head"]
    columns = [Column(f"metric_{i}", [f"{-0.0812345 * (i + 1):.6g}", "1e-05"]) for i in range(8)]
    lines = render(folded_table("per layer", "layer", names, columns, 80), 80)
    assert max(map(len, lines)) <= 80
    text = "\n".join(lines)
    assert all(f"metric_{i}" in text for i in range(8))  # every header whole
    assert "-0.650… " not in text and "-0.649876" in text  # every number whole
    assert "per layer (continued)" in text
    assert "transformer.h.11.attn.c_attn" in text  # room enough for the whole name here


def test_long_names_are_abbreviated_from_the_middle() -> None:
    names = ["model.encoder.layers.11.self_attention.query_key_value", "head"]
    columns = [Column(h, ["0.1234", "5.678"]) for h in ("grad norm", "weight norm", "update norm")]
    lines = render(folded_table("layers", "layer", names, columns, 60), 60)
    assert max(map(len, lines)) <= 60
    row = next(line for line in lines if ELLIPSIS in line)
    assert row.startswith("model…11…query_key_value")  # whole parts dropped, the layer index kept


def test_abbreviated_layer_names_stay_distinct() -> None:
    """Twelve decoder layers and GPT-2's h.0 / h.1 keep their index at 80 columns."""
    llama = [f"model.decoder.layers.{i}.self_attention_block.{p}"
             for i in range(12) for p in ("q_proj", "v_proj")]
    gpt = [f"transformer.h.{i}.{p}" for i in range(2) for p in ("attn.out_proj", "attn.c_attn", "mlp.c_fc")]
    for names in (llama, gpt, [*gpt, "lm_head"]):
        for width in (12, 18, 24, 30):
            short = abbreviate_all(names, width)
            assert len(set(short)) == len(names), (width, short)
            assert all(s.endswith(n.split(".")[-1]) for s, n in zip(short, names))
    assert abbreviate_all(gpt, 16)[0] == "…0…out_proj"
    assert abbreviate_all(llama, 24)[2] == "model…layers.1…q_proj"
    headers = ("grad norm", "weight norm", "update norm", "ratio")
    columns = [Column(h, ["0.1234"] * len(llama)) for h in headers]
    rows = [line.split()[0] for line in render(folded_table("layers", "layer", llama, columns, 80), 80)
            if "proj" in line]
    assert len(set(rows)) == len(llama)
