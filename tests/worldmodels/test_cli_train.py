"""`worldmodels train`: `--set` parsing, the models' training recipes (TRAIN_PRESETS) and their precedence,
`train --help` listing the configs, then train -> resume -> evaluate on a tiny collected dataset."""

from __future__ import annotations

import pytest
import torch

import worldmodels
from worldmodels.cli import main, parse_value, split_overrides
from worldmodels.models import config_names, get_model_class, train_preset, train_preset_name
from worldmodels.train import TrainConfig, train_on_dataset

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> str:
    """6 ImageNav episodes of 10 steps (3 x 8 x 8 frames, 5 actions)."""
    pytest.importorskip("envs")
    out = str(tmp_path_factory.mktemp("cli_train") / "data")
    assert main(["collect", "--env", "ImageNav-v0", "--out", out, "--episodes", "6", "--steps", "10",
                 "--no-progress"]) == 0
    return out


def _train_config(run) -> dict:
    """The TrainConfig a run used, as its checkpoint recorded it."""
    state = worldmodels.checkpoint.load_state(f"{run}/last")
    assert state is not None
    return state["train_config"]


def _train(data: str, run, model: str, config: str, *extra: str) -> int:
    return main(["train", "--model", model, "--config", config, "--data", data, "--out", str(run), "--window", "6",
                 "--set", "progress=false", "--set", "tensorboard=false", *extra])


def test_set_parsing_and_unknown_keys():
    from worldmodels.models.rnn import RNNConfig

    assert parse_value("(1, 32, 32)") == (1, 32, 32) and parse_value("False") is False
    assert parse_value('{"alpha_net": 10}') == {"alpha_net": 10} and parse_value("3e-4") == 3e-4
    model, train = split_overrides(["hidden_dim=7", "lr=0.5", "mlp_hidden=8,8"], RNNConfig)
    assert model == {"hidden_dim": 7, "mlp_hidden": (8, 8)} and train == {"lr": 0.5}
    with pytest.raises(ValueError, match=r"unknown key 'hiden_dim'; did you mean 'hidden_dim'.*'embed_dim'"):
        split_overrides(["hiden_dim=3"], RNNConfig)


def test_train_preset_lookup_from_python():
    from worldmodels.models import kvae, srnn

    assert train_preset("kvae", "debug") == kvae.TRAIN_PRESETS["debug"]
    assert train_preset("kvae", "box") == kvae.TRAIN_PRESETS["default"] and train_preset_name("kvae", "box") == "default"
    assert train_preset("srnn", "video") == srnn.TRAIN_PRESETS["default"]
    assert train_preset("rnn", "debug") == {} and train_preset_name("rnn", "debug") is None
    recipe = train_preset("kvae")
    recipe["freeze_until"]["alpha_net"] = 0  # a copy: the model file's recipe stays as it is
    assert kvae.TRAIN_PRESETS["default"]["freeze_until"] == {"alpha_net": 10}
    with pytest.raises(ValueError, match=r"unknown preset 'boxx' of model 'kvae': expected one of \[.*'pendulum'.*"
                                         r"did you mean 'box'"):
        train_preset("kvae", "boxx")


@pytest.mark.parametrize("model", ["dmm", "gtmsm", "kvae", "rnn", "rssm", "srnn", "vrnn"])
def test_every_training_recipe_is_reachable_and_a_valid_train_config(model):
    import importlib

    recipes = getattr(importlib.import_module(get_model_class(model).__module__), "TRAIN_PRESETS", {})
    assert set(recipes) <= set(config_names(model)), "a TRAIN_PRESETS key no --config name reaches"
    for config in config_names(model):
        TrainConfig(**train_preset(model, config))


def test_cli_trains_with_the_model_s_recipe_and_set_beats_it(data, tmp_path, capsys):
    from worldmodels.models import kvae

    assert _train(data, tmp_path / "debug", "kvae", "debug", "--steps", "2") == 0
    out = capsys.readouterr().out
    assert "training recipe of kvae --config debug: kvae TRAIN_PRESETS['debug'] lr=0.01" in out
    cfg = _train_config(tmp_path / "debug")
    assert {k: cfg[k] for k in kvae.TRAIN_PRESETS["debug"] if k != "epochs"} == {
        k: v for k, v in kvae.TRAIN_PRESETS["debug"].items() if k != "epochs"}
    assert cfg["max_steps"] == 2 and cfg["epochs"] == 10**9  # --steps counts updates, not the recipe's epochs
    # box has no recipe of its own: the default one (§6.8), with --set above it
    assert _train(data, tmp_path / "box", "kvae", "box", "--steps", "1", "--set", "lr=0.02", "--set",
                  "batch_size=4", "--set", "epochs=3") == 0
    out = capsys.readouterr().out
    assert "kvae --config box: kvae TRAIN_PRESETS['default'] lr=0.007" in out
    assert "; overridden by --set progress=False tensorboard=False lr=0.02 batch_size=4 epochs=3" in out
    cfg = _train_config(tmp_path / "box")
    assert (cfg["lr"], cfg["batch_size"], cfg["epochs"], cfg["max_steps"]) == (0.02, 4, 3, 1)
    assert (cfg["lr_schedule"], cfg["decay_rate"], cfg["decay_every"], cfg["grad_clip"], cfg["freeze_until"]) == (
        "step", 0.85, 20, 150.0, {"alpha_net": 10})
    # a model without TRAIN_PRESETS trains with the TrainConfig defaults
    assert _train(data, tmp_path / "rnn", "rnn", "debug", "--steps", "1", "--set", "batch_size=4") == 0
    assert "rnn --config debug: the TrainConfig defaults" in capsys.readouterr().out
    cfg = _train_config(tmp_path / "rnn")
    assert cfg["lr"] == TrainConfig().lr and cfg["lr_schedule"] == "constant" and cfg["batch_size"] == 4


def test_unknown_config_names_the_choices(tmp_path, capsys):
    assert main(["train", "--model", "kvae", "--data", str(tmp_path / "none"), "--config", "boxx"]) == 2
    err = capsys.readouterr().err
    assert "unknown preset 'boxx' of model 'kvae': expected one of ['box', 'debug', 'default'" in err
    assert "did you mean 'box'" in err


def test_train_help_lists_the_configs_and_their_recipes(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "--config NAME" in out and "TRAIN_PRESETS[NAME]" in out
    kvae = next(line for line in out.splitlines() if line.startswith("  kvae "))
    assert "box" in kvae and "pendulum" in kvae and kvae.endswith("-> TRAIN_PRESETS['default']")
    assert any(line.split()[:1] == ["rnn"] and line.endswith("-> TrainConfig defaults") for line in out.splitlines())


def test_train_on_dataset_takes_parsed_values(data, tmp_path):
    with pytest.raises(TypeError, match=r"expected train_overrides as a dict \{field: value\}, received list"):
        train_on_dataset("rnn", data, "debug", train_overrides=["lr=0.1"])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"unknown TrainConfig key 'lr_sched'.*did you mean 'lr_schedule'"):
        train_on_dataset("rnn", data, "debug", train_overrides={"lr_sched": "linear"})
    r = train_on_dataset("rnn", data, "debug", {"hidden_dim": 8}, {"lr": 0.1, "batch_size": 4, "progress": False},
                         out_dir=tmp_path / "py", steps=2, window=6)
    assert r.step == 2 and worldmodels.load(r.checkpoint).config.hidden_dim == 8
    assert _train_config(tmp_path / "py")["lr"] == 0.1


def test_cli_train_then_evaluate(tmp_path, capsys):
    pytest.importorskip("envs")
    from worldmodels.cli import main

    data = str(tmp_path / "data")
    assert (
        main(
            [
                "collect",
                "--env",
                "ImageNav-v0",
                "--out",
                data,
                "--episodes",
                "6",
                "--steps",
                "10",
                "--no-progress",
            ]
        )
        == 0
    )
    run = str(tmp_path / "run")
    args = [
        "train",
        "--model",
        "rnn",
        "--data",
        data,
        "--config",
        "debug",
        "--out",
        run,
        "--window",
        "6",
        "--set",
        "batch_size=8",
        "--set",
        "progress=false",
    ]
    assert main([*args, "--steps", "3"]) == 0
    assert main([*args, "--steps", "5"]) == 0  # resumes from run/last
    assert worldmodels.checkpoint.read_meta(f"{run}/last")["metadata"]["step"] == 5
    model = worldmodels.load(f"{run}/last")
    assert model.config.obs_shape == (3, 8, 8) and model.config.action_dim == 5  # from the dataset meta
    assert (
        main(
            [
                "evaluate",
                "--checkpoint",
                f"{run}/last",
                "--data",
                data,
                "--window",
                "6",
                "--out",
                str(tmp_path / "eval.json"),
            ]
        )
        == 0
    )
    import json

    report = json.loads((tmp_path / "eval.json").read_text())
    assert report["horizon"] == 3 and len(report["prediction_mse"]) == 3
    assert main(["train", "--model", "rnn", "--data", data, "--set", "lr_sched=linear"]) == 2
    assert "did you mean 'lr_schedule'" in capsys.readouterr().err




def test_cli_trains_heads_jointly_and_post_hoc_on_a_frozen_checkpoint(data, tmp_path, capsys):
    from worldmodels.models.with_heads import WithHeads

    assert _train(data, tmp_path / "joint", "kvae", "box", "--steps", "1", "--set", "batch_size=4",
                  "--heads", "reward,cont") == 0
    assert "with heads reward,cont (jointly)" in capsys.readouterr().out
    joint = worldmodels.load(tmp_path / "joint" / "last")
    assert isinstance(joint, WithHeads) and joint.config.model == "kvae" and not joint.config.frozen
    assert joint.config.obs_shape == (3, 8, 8) and joint.cont_head is not None
    # the recipe's freeze_until prefix follows the wrapped model's parameters (model.alpha_net)
    assert _train_config(tmp_path / "joint")["freeze_until"] == {"model.alpha_net": 10}

    assert _train(data, tmp_path / "plain", "rnn", "debug", "--steps", "2") == 0
    plain = worldmodels.load(tmp_path / "plain" / "last")
    capsys.readouterr()
    assert main(["train", "--heads", "reward", "--frozen", str(tmp_path / "plain" / "last"), "--data", data,
                 "--out", str(tmp_path / "heads"), "--window", "6", "--steps", "3",
                 "--set", "progress=false", "--set", "tensorboard=false"]) == 0
    assert "heads reward post hoc on the frozen rnn" in capsys.readouterr().out
    heads = worldmodels.load(tmp_path / "heads" / "last")
    assert isinstance(heads, WithHeads) and heads.config.frozen and heads.cont_head is None
    for k, v in plain.state_dict().items():
        assert torch.equal(heads.model.state_dict()[k], v), f"the frozen {k} changed"

    assert main(["train", "--frozen", str(tmp_path / "plain" / "last"), "--data", data]) == 2
    assert "--frozen trains heads on a frozen model; expected --heads" in capsys.readouterr().err
    assert main(["train", "--data", data]) == 2
    assert "expected --model NAME" in capsys.readouterr().err
    assert main(["train", "--model", "kvae", "--heads", "reward", "--frozen", str(tmp_path / "plain" / "last"),
                 "--data", data]) == 2
    assert "the --frozen checkpoint holds 'rnn'" in capsys.readouterr().err
    assert main(["train", "--model", "rnn", "--heads", "rewards", "--data", data]) == 2
    assert "expected heads among 'reward', 'cont', received ['rewards']" in capsys.readouterr().err
