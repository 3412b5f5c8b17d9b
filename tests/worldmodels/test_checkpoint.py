"""Checkpoints: round trip, nested training state without pickle, refusal of foreign/corrupt/newer files."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

import worldmodels
from worldmodels.checkpoint import load_state, read_meta
from worldmodels.models import build_model


def _model():
    torch.manual_seed(0)
    return build_model("rnn", "debug", obs_shape=(1, 16, 16), action_dim=3, emission="gaussian")


def test_round_trip_weights_config_and_state(tmp_path):
    model = _model()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss = model.loss(
        worldmodels.api.Batch(obs=torch.rand(2, 3, 1, 16, 16), action=torch.zeros(2, 3, 3))
    ).loss
    loss.backward()
    opt.step()
    np.random.seed(3)
    random.seed(3)
    state = {
        "optimizer": opt.state_dict(),
        "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()},
        "odd.keys": {"a.b": torch.arange(3), "a": {"b": torch.ones(1)}},
        "tuple": (1, 2.5, "x", None),
    }
    worldmodels.save(tmp_path / "ck", model, extra_state=state, metadata={"step": 1})
    loaded = worldmodels.load(tmp_path / "ck")
    assert loaded.config == model.config and not loaded.training
    for (k, v), (_, w) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(v, w), k
    back = load_state(tmp_path / "ck")
    opt2 = torch.optim.Adam(loaded.parameters(), lr=1e-3)
    opt2.load_state_dict(back["optimizer"])
    for k, v in opt.state_dict()["state"].items():
        for name, t in v.items():
            assert torch.equal(t, opt2.state_dict()["state"][k][name])
    assert opt2.state_dict()["param_groups"][0]["betas"] == opt.state_dict()["param_groups"][0]["betas"]
    assert torch.equal(back["rng"]["torch"], state["rng"]["torch"])
    ns = back["rng"]["numpy"]
    assert ns[0] == "MT19937" and ns[1].dtype == np.uint32 and np.array_equal(ns[1], state["rng"]["numpy"][1])
    np.random.set_state(ns)
    random.setstate(back["rng"]["python"])
    np.random.seed(3)
    a = np.random.rand()
    np.random.set_state(ns)
    assert np.random.rand() == a
    assert torch.equal(back["odd.keys"]["a.b"], torch.arange(3)) and torch.equal(
        back["odd.keys"]["a"]["b"], torch.ones(1)
    )
    assert back["tuple"] == (1, 2.5, "x", None)
    meta = read_meta(tmp_path / "ck")
    assert meta["model"] == "rnn" and meta["worldmodels_version"] == worldmodels.__version__
    assert meta["metadata"] == {"step": 1}
    # no pickle anywhere: every file is JSON or safetensors
    for f in (tmp_path / "ck").iterdir():
        assert f.suffix in (".json", ".safetensors"), f


def test_overwrite_is_atomic_and_refuses_foreign_folder(tmp_path):
    model = _model()
    worldmodels.save(tmp_path / "ck", model)
    worldmodels.save(tmp_path / "ck", model)  # replacing a checkpoint is fine
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]  # no temp/old folders left
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a worldmodels checkpoint"):
        worldmodels.save(tmp_path / "other", model)


def test_refuses_foreign_corrupt_and_newer(tmp_path):
    with pytest.raises(FileNotFoundError):
        worldmodels.load(tmp_path / "missing")
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "config.json").write_text(json.dumps({"architectures": ["Bert"]}))
    with pytest.raises(ValueError, match="not a worldmodels checkpoint"):
        worldmodels.load(tmp_path / "foreign")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="not a worldmodels checkpoint"):
        worldmodels.load(tmp_path / "empty")

    model = _model()
    ck = worldmodels.save(tmp_path / "ck", model)
    raw = bytearray((ck / "model.safetensors").read_bytes())
    raw[-5] ^= 0xFF
    (ck / "model.safetensors").write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="corrupt.*model.safetensors"):
        worldmodels.load(ck)

    ck = worldmodels.save(tmp_path / "ck2", model)
    (ck / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="corrupt"):
        worldmodels.load(ck)

    ck = worldmodels.save(tmp_path / "ck3", model)
    meta = json.loads((ck / "config.json").read_text())
    meta["format_version"] = 99
    meta["worldmodels_version"] = "9.0.0"
    (ck / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"format version 99 \(written by worldmodels 9.0.0\).*upgrade"):
        worldmodels.load(ck)

    ck = worldmodels.save(tmp_path / "ck4", model)
    meta = json.loads((ck / "config.json").read_text())
    meta["model"] = "rnm"
    meta.pop("config_sha256")  # as in checkpoints written before the self-checksum existed
    (ck / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="unknown model 'rnm'.*did you mean 'rnn'"):
        worldmodels.load(ck)


def test_unregistered_model_cannot_be_saved(tmp_path):
    with pytest.raises(TypeError, match="registered model"):
        worldmodels.save(tmp_path / "x", torch.nn.Linear(2, 2))


def test_refuses_tampered_config_and_truncated_weights(tmp_path):
    model = _model()
    ck = worldmodels.save(tmp_path / "ck", model)
    meta = json.loads((ck / "config.json").read_text())
    meta["config"]["min_std"] = 0.5  # loads without a shape error: only the checksum can catch it
    (ck / "config.json").write_text(json.dumps(meta, indent=2))
    with pytest.raises(ValueError, match="config.json does not match its config_sha256"):
        worldmodels.load(ck)
    ck = worldmodels.save(tmp_path / "ck2", model)
    raw = (ck / "model.safetensors").read_bytes()
    (ck / "model.safetensors").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match="corrupt.*model.safetensors"):
        worldmodels.load(ck)
    legacy = worldmodels.save(tmp_path / "ck3", model)  # a checkpoint without the self-checksum still loads
    meta = json.loads((legacy / "config.json").read_text())
    meta.pop("config_sha256")
    (legacy / "config.json").write_text(json.dumps(meta))
    assert type(worldmodels.load(legacy)).__name__ == "RNN"


def _dead_pid() -> int:
    import subprocess
    import sys

    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


@pytest.mark.parametrize("new_complete", [True, False])
def test_recover_after_a_kill_between_the_two_renames(tmp_path, new_complete):
    """save() moves ``last`` to .last.old-<pid> before renaming the new temp into place: a kill between
    the two leaves no ``last``. recover() restores the newest complete copy and deletes the leftovers."""
    from worldmodels.checkpoint import recover

    old_model, new_model = _model(), _model()
    with torch.no_grad():
        next(new_model.parameters()).add_(1.0)
    pid = _dead_pid()
    worldmodels.save(tmp_path / f".last.old-{pid}", old_model, metadata={"step": 1})
    new = worldmodels.save(tmp_path / f".last.tmp-{pid}", new_model, metadata={"step": 2})
    if not new_complete:  # killed before config.json (written last) was in place
        (new / "config.json").unlink()
    assert recover(tmp_path / "last") == tmp_path / "last"
    assert read_meta(tmp_path / "last")["metadata"]["step"] == (2 if new_complete else 1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]
    # a live writer's temp is not touched; nothing to recover when 'last' exists
    live = worldmodels.save(tmp_path / ".last.tmp-1", old_model)  # pid 1 (init) always runs
    assert recover(tmp_path / "last") == tmp_path / "last" and live.exists()
