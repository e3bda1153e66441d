"""The peers report's headline statistic: batch score at SCVI's bio level along a knob line."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("matplotlib")
pytest.importorskip("scipy")
BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))  # peers_report imports its sibling report.py, as when run
SPEC = importlib.util.spec_from_file_location("peers_report", BENCHMARKS / "peers_report.py")
peers_report = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(peers_report)


def _line(batch, bio, knobs=(1, 10, 100)):
    return pd.DataFrame({"knob_value": knobs, "Batch correction": batch,
                         "Bio conservation": bio})


def test_batch_at_bio_reads_the_crossing_linearly():
    # bio falls from 0.8 to 0.6 while batch rises 0.4 -> 0.8; SCVI's bio 0.7 is crossed
    # half way between the 2nd and 3rd values: batch there is 0.7
    line = _line([0.4, 0.6, 0.8], [0.8, 0.75, 0.65])
    assert peers_report.batch_at_bio(line, 0.7) == pytest.approx(0.7)


def test_batch_at_bio_takes_the_best_point_above_the_level_and_ignores_order_of_rows():
    line = _line([0.9, 0.5, 0.7], [0.72, 0.9, 0.8], knobs=(100, 1, 10))
    assert peers_report.batch_at_bio(line, 0.7) == pytest.approx(0.9)


def test_batch_at_bio_is_nan_when_no_setting_keeps_the_bio():
    assert np.isnan(peers_report.batch_at_bio(_line([0.4, 0.6, 0.8], [0.6, 0.5, 0.4]), 0.7))


def test_headline_from_raw_rows_best_total_and_the_default_strength_as_its_own_row():
    from scvi_mmd import DEFAULT_STRENGTH

    rows = []
    for seed in (0, 1):
        settings = [("SCVI", "", np.nan, 0.5, 0.70), ("A", "k", 1.0, 0.5, 0.70),
                    ("A", "k", 10.0, 0.7, 0.69),
                    (peers_report.STRENGTH, "mmd_strength", DEFAULT_STRENGTH, 0.6, 0.70),
                    (peers_report.STRENGTH, "mmd_strength", 1.0, 0.8, 0.70)]
        for method, knob, value, batch, bio in settings:
            rows.append({"dataset": "d", "seed": seed, "method": method, "knob": knob,
                         "knob_value": value, "Batch correction": batch,
                         "Bio conservation": bio, "Total": 0.4 * batch + 0.6 * bio,
                         "fit_seconds": 1.0})
    summary = peers_report.summarise(pd.DataFrame(rows))
    assert len(summary) == 5 and set(summary["seeds"]) == {2}
    table = peers_report.headline(summary).set_index("method")
    assert list(table.index) == ["SCVI", "A", peers_report.STRENGTH, peers_report.DEFAULT]
    assert table.loc["A", "best setting"] == "k=10"
    assert table.loc["A", "best total"].startswith(f"{0.4 * 0.7 + 0.6 * 0.69:.3f}")
    assert table.loc["A", "batch at SCVI's bio"] == "0.500"  # only k=1 keeps bio 0.70
    # the strength's best is s = 1; the default is its own row at DEFAULT_STRENGTH
    assert table.loc[peers_report.STRENGTH, "best setting"] == "mmd_strength=1"
    assert table.loc[peers_report.DEFAULT, "best setting"] == f"mmd_strength={DEFAULT_STRENGTH:g}"
    assert table.loc[peers_report.DEFAULT, "best total"].startswith(f"{0.4 * 0.6 + 0.6 * 0.7:.3f}")


def test_purity_drop_is_the_largest_fall_below_scvi_of_the_same_seed():
    rows = [{"dataset": "d", "seed": 0, "method": "SCVI", "type_purity[a]": 0.9,
             "type_purity[b]": 0.8},
            {"dataset": "d", "seed": 0, "method": "M", "type_purity[a]": 0.95,
             "type_purity[b]": 0.5},
            {"dataset": "d", "seed": 1, "method": "SCVI", "type_purity[a]": 0.5,
             "type_purity[b]": 0.5},
            {"dataset": "d", "seed": 1, "method": "M", "type_purity[a]": 0.4,
             "type_purity[b]": 0.6},
            {"dataset": "e", "seed": 0, "method": "M"}]  # (no per-type purity recorded)
    drops = peers_report.purity_drop(pd.DataFrame(rows), "dataset", "type_purity[").to_numpy()
    np.testing.assert_allclose(drops[:4], [0.0, 0.3, 0.0, 0.1])
    assert np.isnan(drops[4])
