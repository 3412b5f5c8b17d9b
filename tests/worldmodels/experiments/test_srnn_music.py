"""``worldmodels experiment srnn-music``: the documented commands parse as before, the page is the committed
one when rebuilt from the committed JSON, and train + report run end to end on a tiny reference file."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from worldmodels import experiments, viz
from worldmodels.cli import dataclass_parser, main
from worldmodels.experiments import srnn_music
from worldmodels.music import ChoraleSet

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[3]
DOCS = ROOT / "docs" / "results"


def _parse(argv: str) -> srnn_music.Args:
    exp = srnn_music.EXPERIMENT
    options = vars(dataclass_parser(exp.args, "srnn-music", exp.summary, list(exp.phases)).parse_args(argv.split()))
    options.pop("phase")
    return srnn_music.Args(**options)


def test_the_documented_commands_parse_with_the_same_meaning() -> None:
    # docs/results/srnn_music.json "command", README.md, docs/models/srnn.md and the srnn-music card
    a = _parse("--variants srnn_smooth_resq vrnn rnn dmm srnn_filt srnn_smooth srnn_filt_resq --reference-npz "
               "x.npz --trailing-pad --epochs 50 --eval-every 5 --patience 4 --lr-decay 1.2 --lr-decay-after 20 "
               "--out runs/srnn_music_ref")
    assert a.variants == ("srnn_smooth_resq", "vrnn", "rnn", "dmm", "srnn_filt", "srnn_smooth", "srnn_filt_resq")
    assert (a.trailing_pad, a.epochs, a.patience, a.lr_decay, a.out) == (True, 50, 4, 1.2, "runs/srnn_music_ref")
    b = _parse("--variants srnn_smooth_resq vrnn --trailing-pad --epochs 80 --eval-every 5 --patience 4 "
               "--transpose 6 --dropout 0.1 --threads 1 --out runs/srnn_music_reg")
    assert (b.variants, b.transpose, b.dropout, b.reference_npz) == (("srnn_smooth_resq", "vrnn"), 6, 0.1, "")
    c = _parse("--transpose 6 --dropout 0.1 --trailing-pad --epochs 80 --patience 4")
    assert c.variants == srnn_music.Args().variants and c.trailing_pad and not c.from_json
    assert srnn_music.Args().variants == tuple(v for v in srnn_music.VARIANTS if not v.endswith("_long"))


def test_the_page_from_the_committed_json_is_the_committed_page(tmp_path: Path) -> None:
    for name in ("srnn_music.json", "srnn_video.json"):
        shutil.copy(DOCS / name, tmp_path / name)
    assert main(["experiment", "srnn-music", "--phase", "report", "--from-json", "--results", str(tmp_path)]) == 0
    assert (tmp_path / "srnn.md").read_text() == (DOCS / "srnn.md").read_text()


def test_the_script_report_flag_is_the_report_phase(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, str(ROOT / "scripts" / "srnn_music.py"), "--report", "--out",
                          str(tmp_path / "none"), "--results", str(tmp_path)], capture_output=True, text=True,
                         cwd=ROOT)
    assert out.returncode == 1 and f"report: no finished run in {tmp_path / 'none'}" in out.stderr
    assert list(tmp_path.iterdir()) == []


def test_unknown_variants_are_refused() -> None:
    with pytest.raises(ValueError, match=r"expected variants among \[.*\], received \['lstm'\]"):
        srnn_music.train(srnn_music.Args(variants=("lstm",)))


def _rolls(rng: np.random.Generator, n: int, length: int) -> np.ndarray:
    x = np.zeros((n, length, 88), np.float32)
    x[..., 40:52] = rng.random((n, length, 12)) < 0.3
    return x


@pytest.mark.filterwarnings("ignore:No artists with labels")  # no music21 runs: an empty quarter-note plot
def test_train_and_report_end_to_end_on_a_tiny_reference_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    npz = tmp_path / "ref.npz"
    mask = np.zeros((2, 50), np.float32)
    mask[0, :50], mask[1, :30] = 1, 1
    np.savez(npz, x_train=_rolls(rng, 4, 12), x_valid=_rolls(rng, 2, 12), x_test=_rolls(rng, 2, 50), mask_test=mask)
    # the report reads the music21 chorales for its data statistics: a tiny stand-in (numbers 1..10: every split)
    tiny = ChoraleSet([_rolls(rng, 1, 20)[0].astype(np.uint8) for _ in range(10)], list(range(1, 11)),
                      [f"c{i}" for i in range(10)])
    monkeypatch.setattr(srnn_music, "load_chorales", lambda resolution=1.0: tiny)
    args = srnn_music.Args(variants=("srnn_smooth_resq", "rnn"), epochs=2, eval_every=1, batch_size=2, chunk_len=6,
                           eval_samples=1, reference_npz=str(npz), trailing_pad=True,
                           out=str(tmp_path / "runs" / "srnn_music_ref"), results=str(tmp_path / "docs"))
    srnn_music.EXPERIMENT.run(args)  # train, then report
    run = tmp_path / "runs" / "srnn_music_ref"
    result = json.loads((run / "srnn_smooth_resq" / "result.json").read_text())
    assert result["epochs"] == 2 and result["steps"] == 2 * 4 and result["trailing_pad"] is True
    assert np.isfinite(result["test_elbo"]) and np.isfinite(result["test_elbo_per_sequence"])
    history = (run / "rnn" / "history.json").read_text()
    srnn_music.train(args)  # finished runs are kept as they are
    assert (run / "rnn" / "history.json").read_text() == history

    rec = json.loads((tmp_path / "docs" / "srnn_music.json").read_text())
    assert set(rec) >= {"experiment", "command", "git_commit", "seed", "machine", "wall_clock_s", "budget", "date",
                        "defaults", "thesis_jsb_srnn", "data_stats", "samples_caption", "metrics",
                        "music21_quarter_thesis_recipe", "music21_quarter_regularised", "reference_regularised"}
    assert rec["command"] == srnn_music.COMMAND and sorted(rec["metrics"]) == ["rnn", "srnn_smooth_resq"]
    assert rec["budget"]["epochs"] == 2 and rec["budget"]["trailing_pad"] is True
    assert rec["defaults"] == {"transpose": 0, "dropout": 0.0, "weight_decay": 0.0, "patience": 0}
    assert list(rec["data_stats"]) == ["thesis JSB file (reference SRNN code)", "music21 chorales, quarter notes",
                                       "music21 chorales, eighth notes"]
    assert "train_curve" not in rec["metrics"]["rnn"] and rec["metrics"]["rnn"]["curve"]["epoch"] == [1, 2]
    assert rec["samples_caption"].startswith("reference/test/0: 8 observed steps")
    for png in ("valid_elbo", "train_elbo", "quarter_valid_elbo", "samples"):
        assert (tmp_path / "docs" / f"srnn_music_{png}.png").stat().st_size > 0
    page = (tmp_path / "docs" / "srnn.md").read_text()
    assert "## 1. Polyphonic music" in page and "| SRNN (smooth+Res_q) |" in page and "| RNN (exact) |" in page
    assert "## 2." not in page  # no srnn_video.json in that folder


def test_plot_curves_refuses_curves_of_unequal_lengths(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"curve 'a': expected \(xs, ys\) of one length, received \[2, 3\]"):
        viz.plot_curves(tmp_path / "c.png", {"a": ([1, 2], [1.0, 2.0, 3.0])}, "x", "y", "t")


def test_the_registry_names_this_module() -> None:
    assert experiments.get("srnn-music") is srnn_music.EXPERIMENT
    assert experiments.summary("srnn-music") == srnn_music.EXPERIMENT.summary and list(srnn_music.EXPERIMENT.phases) == ["train", "report"]
