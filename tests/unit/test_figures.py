"""README.md and docs/benchmarks.md show the figures of bench/results/*.json, never typed ones."""

from __future__ import annotations

import pytest

from recsys_devtools import figures


@pytest.mark.parametrize("target", sorted(figures.TARGETS))
def test_committed_figures_match_the_benchmark_results(target):
    text = (figures.ROOT / target).read_text()
    assert text == figures.render(text, figures.blocks(), figures.TARGETS[target]), (
        "run: python -m recsys_devtools.figures"
    )


def test_a_figure_that_differs_from_its_json_is_caught():
    text = (figures.ROOT / "README.md").read_text()
    rendered = figures.blocks()
    altered = text.replace(rendered["headline"], rendered["headline"].replace("|", "| 9", 2), 1)
    assert altered != text and figures.render(altered, rendered, ("headline",)) == text


def test_every_figure_reads_its_benchmark():
    for bench, label, value, form in figures.FIGURES:
        assert form.format(value(figures.load(bench))), label
