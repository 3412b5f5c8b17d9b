"""The MiniWorld walking-update benchmark group (``make bench``, ``gtmsm_miniworld_train``) on a tiny budget:
its two worker processes answer, every row has its numbers, and the kept-memory worker stops faulting pages in."""

from __future__ import annotations

import platform

import pytest

from worldmodels.experiments.benchmarks import gtmsm_miniworld_train as bench


@pytest.mark.slow
def test_rows_of_one_round_on_one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench, "ROUNDS", 1)
    monkeypatch.setattr(bench, "UPDATES", 2)
    rows = bench.run((1,))
    assert [r["name"].split(": ", 1)[1] for r in rows] == [
        "fused momentum scan + channels-last convs", "+ keep_freed_memory (what the experiment trains with)",
        "+ VAE in bfloat16 (vae_precision, opt-in)"]
    for r in rows:
        assert r["group"] == "gtmsm_miniworld_train" and r["unit"] == "ms/update"
        assert r["value"] > 0 and r["baseline_value"] > 0 and r["ratio"] > 0 and "peak resident memory" in r["notes"]
    assert "updates/hour" in rows[1]["notes"] and "100,000 updates in" in rows[1]["notes"]
    if platform.system() == "Linux" and platform.libc_ver()[0] == "glibc":
        after = float(rows[1]["notes"].split("after ")[-1].split(";")[0].replace(",", ""))
        assert after < 1000  # the kept-memory worker reuses its blocks (the default one faults ~10^5 pages)
