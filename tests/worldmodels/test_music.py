"""JSB-style chorales from music21: piano rolls against hand-written scores, the documented split,
the atomic .npz cache and its error messages, training buckets and the per-step ELBO evaluation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

music21 = pytest.importorskip("music21")
from music21 import chord, note, stream  # noqa: E402

from worldmodels.models import build_model  # noqa: E402
from worldmodels.music import (  # noqa: E402
    CACHE_NAME,
    ChoraleSet,
    MusicBuckets,
    _load,
    _save,
    build_chorales,
    evaluate_elbo,
    evaluate_elbo_weighted,
    evaluate_fivo,
    load_chorales,
    load_reference_npz,
    pad_batch,
    piano_roll,
    split_of,
    transpose_rolls,
)


def test_piano_roll_of_a_hand_written_score():
    """Quarter-note sampling: a key is on at beat k when a note sounds at k (onset <= k < onset + dur)."""
    s = stream.Stream()
    s.insert(0.0, chord.Chord(["C4", "E4", "G4"], quarterLength=2.0))  # beats 0, 1
    s.insert(2.0, note.Rest(quarterLength=1.0))  # beat 2 silent
    s.insert(3.0, note.Note("A0", quarterLength=0.5))  # beat 3 (sounds at the sample time)
    s.insert(3.5, note.Note("C8", quarterLength=0.5))  # between samples: never sampled
    s.insert(4.5, note.Note("D4", quarterLength=1.0))  # sounds at beat 5 only
    roll = piano_roll(s)
    expect = np.zeros((6, 88), np.uint8)
    expect[0:2, [60 - 21, 64 - 21, 67 - 21]] = 1
    expect[3, 0] = 1
    expect[5, 62 - 21] = 1
    np.testing.assert_array_equal(roll, expect)
    eighths = piano_roll(s, resolution=0.5)
    assert eighths.shape == (11, 88) and eighths[7, 108 - 21] == 1 and eighths[:, 108 - 21].sum() == 1
    with pytest.raises(ValueError, match="resolution"):
        piano_roll(s, resolution=0)


def test_split_rule():
    splits = [split_of(n) for n in range(1, 372)]
    assert splits.count("test") == 74 and splits.count("valid") == 74 and splits.count("train") == 223
    assert split_of(10) == "test" and split_of(13) == "valid" and split_of(11) == "train"
    with pytest.raises(ValueError, match=">= 1"):
        split_of(0)


def test_build_a_few_chorales_matches_the_corpus():
    from music21 import corpus

    data = build_chorales(numbers=[1, 2, 5], progress=False)
    names = list(corpus.chorales.Iterator(returnType="filename"))
    assert data.numbers == [1, 2, 5] and data.names == [names[0], names[1], names[4]]
    for roll, name in zip(data.rolls, data.names):
        np.testing.assert_array_equal(roll, piano_roll(corpus.parse(name)))
    frames = np.concatenate(data.rolls)
    assert 3.0 < frames.sum(1).mean() <= 4.5  # four voices, a few unisons and rests
    assert data.split("test").numbers == [5] and data.split("train").numbers == [1, 2]


def test_duplicate_and_unknown_numbers_are_named():
    from music21 import corpus

    names = list(corpus.chorales.Iterator(returnType="filename"))
    dup = next(i for i in range(len(names)) if names[i] in names[:i]) + 1
    first = names.index(names[dup - 1]) + 1
    with pytest.raises(ValueError, match=rf"{dup} \(duplicate of {first}\)"):
        build_chorales(numbers=[dup], progress=False)
    with pytest.raises(ValueError, match="outside 1..371"):
        build_chorales(numbers=[999], progress=False)


def _toy() -> ChoraleSet:
    g = np.random.default_rng(0)
    rolls = [(g.random((n, 88)) < 0.05).astype(np.uint8) for n in (7, 3, 12, 5, 5)]
    return ChoraleSet(rolls, [1, 2, 3, 4, 5], [f"bach/x{i}" for i in range(5)])


def test_cache_round_trip_and_errors(tmp_path, monkeypatch):
    data = _toy()
    path = tmp_path / CACHE_NAME
    _save(path, data)
    assert not list(tmp_path.glob("*.tmp*"))
    back = _load(path)
    assert back.numbers == data.numbers and back.names == data.names
    for a, b in zip(back.rolls, data.rolls):
        np.testing.assert_array_equal(a, b)

    def no_parse(**kwargs):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr("worldmodels.music.build_chorales", no_parse)
    assert load_chorales(cache_dir=tmp_path).numbers == data.numbers
    monkeypatch.setenv("WORLDMODELS_DATA", str(tmp_path))
    assert load_chorales().names == data.names

    path.write_bytes(b"not an npz")
    with pytest.raises(ValueError, match="could not read it"):
        _load(path)
    np.savez(path, format_version=np.int64(99), rolls=np.zeros((1, 88)), lengths=np.ones(1),
             numbers=np.ones(1), names=np.array(["a"]))
    with pytest.raises(ValueError, match="format 1, received 99"):
        _load(path)


def test_buckets_cover_every_frame_once_with_little_padding():
    data = _toy()
    buckets = MusicBuckets(data, batch_size=2, chunk_len=4)
    chunks = [r[s:s + 4] for r in data.rolls for s in range(0, len(r), 4)]
    seen = []
    for b in buckets:
        lengths = b.mask.sum(1)
        assert b.obs.shape[1] == int(lengths.max()) <= 4 and b.action.shape[-1] == 0
        for i, n in enumerate(lengths.tolist()):
            assert not b.obs[i, n:].any()
            seen.append(b.obs[i, :n].numpy().astype(np.uint8))
    key = lambda a: (len(a), a.tobytes())  # noqa: E731
    assert sorted(map(key, seen)) == sorted(map(key, chunks))
    with pytest.raises(ValueError, match="batch_size=1"):
        MusicBuckets.collate([buckets[0], buckets[1]])


def test_evaluate_elbo_is_the_exact_rnn_log_likelihood_per_frame():
    """For the RNN the ELBO is the exact log-likelihood: compare with per-chorale evaluation."""
    torch.manual_seed(0)
    model = build_model("rnn", "debug", obs_shape=(88,), action_dim=1).double()
    data = _toy()
    got = evaluate_elbo(model.float(), data)
    total = 0.0
    for r in data.rolls:
        batch, _ = pad_batch([r], action_dim=1)
        total += model.loss(batch).metrics["elbo"] * len(r)
    assert got == pytest.approx(total / data.n_frames, rel=1e-5)
    assert model.training  # the evaluation restores the mode


def test_evaluate_fivo_is_tighter_than_the_elbo_and_needs_fivo():
    torch.manual_seed(0)
    model = build_model("srnn", "debug", obs_shape=(88,), action_dim=0)
    data = _toy()
    elbo = np.mean([evaluate_elbo(model, data, seed=s) for s in range(5)])
    fivo = np.mean([evaluate_fivo(model, data, n_particles=16, seed=s) for s in range(5)])
    assert np.isfinite(fivo) and elbo < fivo < 0
    with pytest.raises(TypeError, match="fivo"):
        evaluate_fivo(build_model("rnn", "debug", obs_shape=(88,), action_dim=1), data)


def test_transposed_buckets_shift_each_chorale_within_the_keyboard():
    """transpose=k: every row is its original chunk shifted by one integer in -k..k, notes never leave the
    88 keys (a chunk near the top can only go down), padding stays silent, and all shifts occur."""
    rolls = [np.zeros((4, 88), np.uint8) for _ in range(3)]
    rolls[0][:, 40] = 1
    rolls[1][:2, [10, 20]] = 1
    rolls[2][:, 86] = 1  # one key below the top: shifts up to +1 only
    data = ChoraleSet(rolls, [1, 2, 4], ["a", "b", "c"])
    buckets = MusicBuckets(data, batch_size=3, chunk_len=4, transpose=3)
    base = buckets.batches[0]
    torch.manual_seed(0)
    shifts: dict[int, set[int]] = {i: set() for i in range(3)}
    for _ in range(200):
        b = buckets[0]
        assert torch.equal(b.mask, base.mask) and b.obs.sum() == base.obs.sum()
        for i in range(3):
            found = [s for s in range(-3, 4)
                     if torch.equal(transpose_rolls(base.obs[i:i + 1], torch.tensor([s]))[0], b.obs[i])]
            assert len(found) == 1
            shifts[i].add(found[0])
    assert shifts[0] == set(range(-3, 4)) and shifts[2] == {-3, -2, -1, 0, 1}
    assert buckets.batches[0] is base and torch.equal(MusicBuckets(data, 3, 4)[0].obs, base.obs)
    with pytest.raises(ValueError, match="transpose"):
        MusicBuckets(data, batch_size=3, transpose=-1)
    with pytest.raises(ValueError, match="shifts"):
        transpose_rolls(base.obs, torch.tensor([1]))


def test_reference_npz_is_read_as_chunks_and_masked_songs(tmp_path):
    """The reference SRNN code's layout: train/valid chunks, test songs cut to their mask; u_* is ignored."""
    g = np.random.default_rng(0)
    x = {k: (g.random((n, T, 88)) < 0.05).astype(np.float32) for k, n, T in
         (("train", 3, 5), ("valid", 2, 5), ("test", 3, 6))}
    mask = np.zeros((3, 6), np.float32)
    mask[0, :6], mask[1, :2] = 1, 1  # row 2: all padding (dropped)
    path = tmp_path / "ref.npz"
    np.savez(path, **{f"x_{k}": v for k, v in x.items()}, **{f"u_{k}": v for k, v in x.items()}, mask_test=mask)
    ref = load_reference_npz(path)
    assert [len(ref[k]) for k in ("train", "valid", "test")] == [3, 2, 2]
    assert [len(r) for r in ref["test"].rolls] == [6, 2]
    np.testing.assert_array_equal(ref["test"].rolls[1], x["test"][1, :2])
    np.testing.assert_array_equal(ref["train"].rolls[2], x["train"][2])
    bad = tmp_path / "bad.npz"
    np.savez(bad, x_train=x["train"])
    with pytest.raises(ValueError, match="x_valid"):
        load_reference_npz(bad)


def test_evaluate_elbo_weighted_frames_and_sequences():
    """"frames" weights chorales by length, "sequences" averages each chorale's per-step value: check both
    against per-chorale evaluations with the RNN (exact likelihood)."""
    torch.manual_seed(0)
    model = build_model("rnn", "debug", obs_shape=(88,), action_dim=1)
    data = _toy()
    per = [evaluate_elbo(model, ChoraleSet([r], [1], ["a"])) for r in data.rolls]
    lengths = np.array([len(r) for r in data.rolls])
    got = evaluate_elbo_weighted(model, data)
    assert got["frames"] == pytest.approx(float((np.array(per) * lengths).sum() / lengths.sum()), rel=1e-5)
    assert got["sequences"] == pytest.approx(float(np.mean(per)), rel=1e-5)
