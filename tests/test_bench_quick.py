"""bench/quick.py, the regression guard: its table, its marks and its baseline (the benches are
replaced by fixed figures here; running them is the guard's own job)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import quick  # noqa: E402

SIZES = ["--rows", "1000", "--examples", "500", "--calls", "10", "--texts", "100"]


@pytest.fixture
def fake_benches(monkeypatch):
    """Each bench gives one figure with the ratio in `ratios` (value over a floor of 1)."""
    ratios = {"import": 10.0, "review": 100.0, "teacher": 1.1, "serve": 5.0}

    def runner(name):
        def run(args, logs):
            ratio = ratios[name]
            return {
                "figures": {f"{name}_figure": quick.figure(ratio, 1.0, "s", f"{name} / floor")},
                "extra": {},
                "wall_s": 0.1,
                "load_1m": [0.5, 0.5],
            }

        return run

    monkeypatch.setattr(quick, "RUNNERS", {name: runner(name) for name in quick.BENCHES})
    monkeypatch.setattr(quick, "ensure_database", lambda url: False)
    return ratios


def test_figure_ratio_is_how_many_times_worse_than_the_floor():
    assert quick.figure(30.0, 10.0, "s", "x")["ratio"] == 3.0
    # Rates: the floor is faster, so the ratio is floor over value.
    assert quick.figure(100.0, 150.0, "calls/s", "x", inverse=True)["ratio"] == 1.5


def test_first_run_prints_the_cpu_and_every_figure_without_a_baseline(fake_benches, tmp_path, capsys):
    code = quick.main([*SIZES, "--baseline", str(tmp_path / "baseline.json")])
    out = capsys.readouterr().out
    assert code == 0
    assert out.startswith(f"CPU: {quick.cpu_model()}")
    for name in quick.BENCHES:
        assert f"{name}_figure" in out
    assert "worse" not in out


def test_a_ratio_more_than_ten_percent_worse_is_marked_and_fails(fake_benches, tmp_path, capsys):
    baseline = tmp_path / "baseline.json"
    assert quick.main([*SIZES, "--baseline", str(baseline), "--update-baseline", "--note", "first"]) == 0
    recorded = json.loads(baseline.read_text())
    assert recorded["note"] == "first" and recorded["figures"]["review_figure"]["ratio"] == 100.0
    capsys.readouterr()

    fake_benches["review"] = 109.0  # within 10 %
    fake_benches["serve"] = 5.6  # 12 % worse
    code = quick.main([*SIZES, "--baseline", str(baseline), "--json"])
    out = capsys.readouterr().out
    assert code == 3
    marked = [line.split()[1] for line in out.splitlines() if "more than 10 % worse" in line]
    assert marked == ["serve_figure"]
    table = json.loads(out[out.index("\n{") :])["table"]
    assert {row["figure"]: row["worse"] for row in table}["review_figure"] is False


def test_other_sizes_are_not_compared_with_the_baseline(fake_benches, tmp_path, capsys):
    baseline = tmp_path / "baseline.json"
    quick.main([*SIZES, "--baseline", str(baseline), "--update-baseline", "--note", "first"])
    fake_benches["serve"] = 50.0
    assert quick.main(["--rows", "2000", *SIZES[2:], "--baseline", str(baseline)]) == 0
    assert "not compared" in capsys.readouterr().out


def test_the_baseline_moves_only_with_a_note(fake_benches, tmp_path):
    with pytest.raises(SystemExit):
        quick.main([*SIZES, "--baseline", str(tmp_path / "b.json"), "--update-baseline"])
    assert not (tmp_path / "b.json").exists()


def test_a_failed_bench_fails_the_run_and_never_becomes_the_baseline(
    fake_benches, monkeypatch, tmp_path, capsys
):
    def broken(args, logs):
        raise RuntimeError("import counts wrong")

    monkeypatch.setitem(quick.RUNNERS, "import", broken)
    baseline = tmp_path / "baseline.json"
    code = quick.main([*SIZES, "--baseline", str(baseline), "--update-baseline", "--note", "x"])
    assert code == 1
    assert "import   FAILED: import counts wrong" in capsys.readouterr().out
    assert not baseline.exists()


def test_committed_baseline_names_every_figure():
    recorded = json.loads(quick.BASELINE.read_text())
    assert recorded["note"] and recorded["cpu"]
    assert recorded["sizes"] == {"rows": 100_000, "examples": 10_000, "calls": 300, "texts": 1000}
    assert set(recorded["figures"]) == {
        "import_cpu_s",
        "review_action_cpu_ms",
        "teacher_cpu_ms_per_call",
        "serve_single_cpu_ms",
        "serve_batched_cpu_ms_per_text",
        "serve_app_cpu_ms",
    }
