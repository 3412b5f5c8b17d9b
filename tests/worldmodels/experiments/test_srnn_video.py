"""``worldmodels experiment srnn-video``: the documented command parses, both environments run end to end
on a tiny budget (collect, train, evaluate, JSON, GIFs, plot, page), and the naive predictors score as
hand-computed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from worldmodels import experiments
from worldmodels.api import Batch
from worldmodels.cli import dataclass_parser
from worldmodels.experiments import srnn_video

pytestmark = pytest.mark.usefixtures("one_thread")


def test_the_documented_command_parses() -> None:
    exp = srnn_video.EXPERIMENT
    parser = dataclass_parser(exp.args, "srnn-video", exp.summary, list(exp.phases))
    assert parser.parse_args(["--envs", "ball", "nav"]).envs == ("ball", "nav") == srnn_video.Args().envs
    assert parser.parse_args(["--envs", "nav"]).envs == ("nav",)
    with pytest.raises(ValueError, match=r"expected envs among \['ball', 'nav'\], received \['pong'\]"):
        srnn_video.train(srnn_video.Args(envs=("pong",)))


class _Windows(torch.utils.data.Dataset):
    def __init__(self, obs: torch.Tensor):
        self.obs = obs

    def __len__(self) -> int:
        return len(self.obs)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.obs[i]

    def collate(self, items: list) -> Batch:
        obs = torch.stack(items)
        B, T = obs.shape[:2]
        return Batch(obs=obs, action=torch.zeros(B, T, 1), mask=torch.ones(B, T, dtype=torch.bool),
                     is_first=torch.zeros(B, T, dtype=torch.bool))


def test_naive_errors_by_hand() -> None:
    obs = torch.tensor([[0.0, 1.0, 0.0, 1.0]]).reshape(1, 4, 1)  # context 0, 1; then 0, 1
    err = srnn_video.naive_errors(_Windows(obs), context=2, horizon=2, metric="mse")
    assert err == {"repeat last frame": [1.0, 0.0], "mean context frame": [0.25, 0.25], "blank frame": [0.0, 1.0]}
    pix = srnn_video.naive_errors(_Windows(obs), context=2, horizon=2, metric="pixel")
    assert pix["mean context frame"] == [0.0, 1.0]  # 0.5 is not > 0.5: predicted off


def test_both_environments_end_to_end_on_a_tiny_budget(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.argv", ["scripts/srnn_video.py", "--envs", "ball", "nav"])
    args = srnn_video.Args(train_episodes=16, test_episodes=4, frames=12, context=4, horizon=8, epochs=1,
                           epochs_ball=1, batch_size=8, out=str(tmp_path / "runs"), results=str(tmp_path / "docs"))
    srnn_video.EXPERIMENT.run(args)  # train (both environments), then report
    docs = tmp_path / "docs"
    rec = json.loads((docs / "srnn_video.json").read_text())
    assert rec["command"] == "python scripts/srnn_video.py --envs ball nav" and rec["experiment"] == "srnn_video"
    assert rec["budget"] == {"epochs": 1, "epochs_ball": 1, "batch_size": 8, "train_episodes": 16,
                             "test_episodes": 4, "frames": 12}
    assert (rec["context"], rec["horizon"]) == (4, 8) and list(rec["metrics"]) == ["ball", "nav"]
    ball, nav = rec["metrics"]["ball"], rec["metrics"]["nav"]
    assert list(ball["models"]) == ["SRNN", "KVAE"] and list(nav["models"]) == ["SRNN"]
    assert ball["obs_shape"] == [1, 16, 16] and nav["obs_shape"] == [192] and ball["train_windows"] == 16
    assert ball["models"]["KVAE"]["steps"] == 2 and len(ball["models"]["SRNN"]["prediction_error"]) == 8
    assert 0 <= ball["models"]["SRNN"]["imputation_gap8"] <= 1 and nav["models"]["SRNN"]["imputation_gap8_mse"] >= 0
    assert sorted(nav["naive"]) == ["blank frame", "mean context frame", "repeat last frame"]
    for name in ("ball_srnn.gif", "ball_kvae.gif", "nav_srnn.gif", "ball_prediction.png", "nav_prediction.png"):
        assert (docs / f"srnn_video_{name}").stat().st_size > 0
    page = (docs / "srnn.md").read_text()
    assert "## 2. Action-conditioned video world models" in page and "### ImageNav-v0 (model obs (192,)" in page
    assert "## 1." not in page  # no srnn_music.json in that folder

    before = np.asarray(nav["models"]["SRNN"]["prediction_error"])
    srnn_video.train(srnn_video.Args(**{**vars(args), "envs": ("nav",)}))  # a rerun resumes the finished runs
    again = json.loads((docs / "srnn_video.json").read_text())
    assert list(again["metrics"]) == ["ball", "nav"]  # the same budget: ball is kept
    assert np.array_equal(again["metrics"]["nav"]["models"]["SRNN"]["prediction_error"], before)


def test_the_registry_names_this_module() -> None:
    assert experiments.get("srnn-video") is srnn_video.EXPERIMENT
    assert experiments.summary("srnn-video") == srnn_video.EXPERIMENT.summary and list(srnn_video.EXPERIMENT.phases) == ["train", "report"]
