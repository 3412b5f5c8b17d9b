"""Shipping runs as package checkpoints (worldmodels.pretrained.ship, run by scripts/ship_pretrained.py).

The training runs behind the shipped models are not in a checkout, so the end-to-end check ships a shipped
model again from its own folder into a temporary package and compares the result with what ships.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import worldmodels
from worldmodels import pretrained
from worldmodels.pretrained import ship

pytestmark = pytest.mark.usefixtures("one_thread")


def test_every_shipped_name_has_a_source_and_the_tolerance_its_card_states() -> None:
    assert sorted(ship.SOURCES) == sorted(ship.TOLERANCES) == pretrained.names()
    for name, (kind, tol, why) in ship.TOLERANCES.items():
        ev = pretrained.card(name)["evaluation"]
        assert ev["tolerance"] == pytest.approx(tol * abs(ev["value"]) if kind == "relative" else tol), name
        assert ev["tolerance_reason"] == why and kind in ("relative", "absolute")
    assert ship.package_bytes() <= ship.MAX_TOTAL_BYTES


def test_last_step_reads_the_metrics_csv(tmp_path: Path) -> None:
    csv = tmp_path / "metrics.csv"
    csv.write_text("step,loss\n10,1.0\n250,0.5\n")
    assert ship.last_step(csv) == 250
    csv.write_text("step,loss\n")
    assert ship.last_step(csv) == 0
    csv.write_text("loss,step\n1.0,10\n")
    with pytest.raises(ValueError, match="expected a metrics CSV whose first column is 'step'"):
        ship.last_step(csv)
    with pytest.raises(ValueError, match=r"expected a name in \[.*'kvae-box'.*\], received 'kvae-ball'"):
        ship.ship("kvae-ball")


def test_shipping_kvae_box_again_gives_its_weights_and_card(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shipped = pretrained.card("kvae-box")
    source = {"checkpoint": pretrained.path("kvae-box"), "preset": shipped["preset"],
              "produced_by": {"commands": shipped["produced_by"]["commands"], "budget": shipped["produced_by"]["budget"]},
              "data": shipped["data"], "documented": shipped["documented"], "experiment_test_data": None}
    monkeypatch.setitem(ship.SOURCES, "kvae-box", lambda: source)
    card = ship.ship("kvae-box", cache=tmp_path / "cache", seeds=0, command="python scripts/ship_pretrained.py -x",
                     package=tmp_path / "pkg")
    ev, was = card["evaluation"], shipped["evaluation"]
    assert ev["value"] == pytest.approx(was["value"], abs=was["tolerance"]) and ev["metric"] == was["metric"]
    assert set(card) == set(shipped) and set(ev) == set(was) - {"episodes_equal_experiment_test_set"}
    assert card["parameters"] == shipped["parameters"] and card["model"] == "kvae"
    assert card["shipped_by"]["command"] == "python scripts/ship_pretrained.py -x"
    assert card["produced_by"]["checkpoint"] == "worldmodels/pretrained/kvae-box"
    assert sorted(p.name for p in (tmp_path / "pkg" / "kvae-box").iterdir()) == ["card.json", "config.json",
                                                                               "model.safetensors"]
    again, ours = worldmodels.load(tmp_path / "pkg" / "kvae-box"), worldmodels.load("kvae-box")
    for (k, a), (_, b) in zip(again.state_dict().items(), ours.state_dict().items()):
        assert torch.equal(a, b), k
