"""DND tests: every backend against an exhaustive numpy search (float64 oracle), gradients by gradcheck."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from worldmodels.memory import DND, kernel_read, knn_search

EXACT = ["torch", "faiss-flat"]


def oracle(keys: np.ndarray, valid: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exhaustive kNN: lexicographic (distance, slot) order over the valid entries of each memory."""
    B, Q = queries.shape[:2]
    d_out = np.full((B, Q, k), np.inf)
    i_out = np.full((B, Q, k), -1, dtype=np.int64)
    for b in range(B):
        for q in range(Q):
            d = ((queries[b, q][None] - keys[b]) ** 2).sum(-1)
            slots = np.flatnonzero(valid[b])
            order = np.lexsort((slots, d[slots]))[:k]
            d_out[b, q, : len(order)] = d[slots[order]]
            i_out[b, q, : len(order)] = slots[order]
    return d_out, i_out


def filled(B: int, M: int, k_dim: int, v_dim: int, grid: int | None, mask_p: float = 0.0, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    if grid is None:
        keys = torch.randn(B, M, k_dim, generator=g, dtype=torch.float64)
    else:  # small integers: exact in float32 too, and many exact distance ties
        keys = torch.randint(0, grid, (B, M, k_dim), generator=g).double()
    values = torch.randn(B, M, v_dim, generator=g, dtype=torch.float64)
    mask = torch.rand(B, M, generator=g) >= mask_p
    return keys, values, mask


@pytest.mark.parametrize("B", [1, 3])
@pytest.mark.parametrize(
    "backend,grid",  # FAISS searches in float32: its index-exactness is asserted on grid data
    [("torch", None), ("torch", 4), ("faiss-flat", 4)],
)
def test_exact_backends_equal_exhaustive_search(backend: str, B: int, grid: int | None) -> None:
    keys, values, mask = filled(B, 300, 3, 2, grid, mask_p=0.2)
    dnd = DND(3, 2, backend=backend, update_existing=False)
    dnd.write(keys, values, mask)
    queries = torch.randint(0, 4, (B, 40, 3)).double() if grid else torch.randn(B, 40, 3, dtype=torch.float64)
    r = dnd.read(queries, k=7)
    d_ref, i_ref = oracle(keys.numpy(), mask.numpy(), queries.numpy(), 7)
    np.testing.assert_array_equal(r.index.numpy(), i_ref)
    np.testing.assert_array_equal(r.sq_dist.detach().numpy(), d_ref)
    np.testing.assert_array_equal(r.values.detach().numpy(), np.take_along_axis(
        values.numpy()[:, None], i_ref[..., None], axis=2))
    if grid:  # the grid data must actually contain ties at the k-th neighbour for this test to mean much
        d_all = ((queries.numpy()[:, :, None] - keys.numpy()[:, None]) ** 2).sum(-1)
        assert ((d_all == d_ref[..., -1:]).sum(-1) > 1).mean() > 0.5


@pytest.mark.parametrize("backend", EXACT)
def test_memory_smaller_than_k_and_empty_memory(backend: str) -> None:
    keys = torch.tensor([[[0.0], [1.0], [5.0]], [[2.0], [3.0], [4.0]]])
    mask = torch.tensor([[True, False, True], [False, False, False]])
    dnd = DND(1, 1, backend=backend)
    dnd.write(keys, keys, mask)
    r = dnd.read(torch.tensor([[[0.9]], [[0.0]]]), k=3)
    assert r.index.tolist() == [[[0, 2, -1]], [[-1, -1, -1]]]
    assert r.valid.tolist() == [[[True, True, False]], [[False, False, False]]]
    assert torch.isinf(r.sq_dist[0, 0, 2]) and r.weights[0, 0, 2] == 0 and r.weights[1].abs().sum() == 0
    np.testing.assert_allclose(r.weights[0, 0].sum().item(), 1.0, rtol=1e-6)
    assert dnd.size().tolist() == [2, 0]


def test_batched_memories_are_independent() -> None:
    """Row b of a batched read equals a read of memory b alone (faiss lists vs a single flat index)."""
    keys, values, mask = filled(3, 200, 2, 2, grid=None, mask_p=0.1, seed=1)
    q = torch.randn(3, 10, 2, dtype=torch.float64)
    batched = DND(2, 2, backend="faiss-flat")
    batched.write(keys, values, mask)
    r = batched.read(q, 4)
    for b in range(3):
        single = DND(2, 2, backend="faiss-flat")
        single.write(keys[b : b + 1], values[b : b + 1], mask[b : b + 1])
        assert torch.equal(single.read(q[b : b + 1], 4).index[0], r.index[b])


@pytest.mark.parametrize("backend", ["faiss-hnsw", "faiss-ivf"])
def test_approximate_recall(backend: str) -> None:
    keys, values, _ = filled(2, 4000, 4, 1, grid=None, seed=2)
    q = torch.randn(2, 200, 4, dtype=torch.float64)
    dnd = DND(4, 1, backend=backend, update_existing=False)
    dnd.write(keys, values)
    got = dnd.read(q, 5).index.numpy()
    _, ref = oracle(keys.numpy(), np.ones((2, 4000), bool), q.numpy(), 5)
    recall = np.mean([len(set(got[b, i]) & set(ref[b, i])) / 5 for b in range(2) for i in range(200)])
    print(f"{backend} recall@5 = {recall:.4f}")
    assert recall >= 0.95


def test_kernel_weights_and_lookup_match_formula() -> None:
    keys, values, _ = filled(2, 50, 3, 4, grid=None, seed=3)
    q = torch.randn(2, 6, 3, dtype=torch.float64)
    dnd = DND(3, 4, backend="torch", delta=1e-3)
    dnd.write(keys, values)
    r = dnd.read(q, 5)
    d_ref, i_ref = oracle(keys.numpy(), np.ones((2, 50), bool), q.numpy(), 5)
    w = 1.0 / (d_ref + 1e-3)
    w /= w.sum(-1, keepdims=True)
    np.testing.assert_allclose(r.weights.detach().numpy(), w, rtol=1e-12)
    v = np.take_along_axis(values.numpy()[:, None], i_ref[..., None], axis=2)  # [B, Q, K, v]
    np.testing.assert_allclose(dnd.lookup(q, 5).detach().numpy(), (w[..., None] * v).sum(2), rtol=1e-12)


def test_gradcheck_kernel_read() -> None:
    keys, values, _ = filled(2, 20, 2, 3, grid=None, seed=4)
    q = torch.randn(2, 4, 2, dtype=torch.float64)
    _, index = knn_search(keys, q, 5)
    index[0, 0, 4] = -1  # a missing neighbour must not break the gradients
    args = (keys.requires_grad_(), values.requires_grad_(), q.requires_grad_())
    assert torch.autograd.gradcheck(lambda k, v, x: kernel_read(k, v, x, index, 1e-2).lookup(), args)
    assert torch.autograd.gradcheck(lambda k, v, x: kernel_read(k, v, x, index, 1e-2).weights, args)


def test_gradcheck_through_write_then_read() -> None:
    """Memorisation-phase writes carry the graph: reads backpropagate into written keys and values."""
    keys, values, _ = filled(2, 12, 2, 2, grid=None, seed=5)
    q = torch.randn(2, 3, 2, dtype=torch.float64)
    dnd = DND(2, 2, capacity=16, backend="torch", delta=1e-2)

    def f(k: torch.Tensor, v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        dnd.reset()
        dnd.write(k, v)
        return dnd.read(x, 4).lookup()

    assert torch.autograd.gradcheck(f, (keys.requires_grad_(), values.requires_grad_(), q.requires_grad_()))
    # and the value gradient of sum(lookup) is the total weight each entry received
    out = f(keys, values, q)
    out.sum().backward()
    r = dnd.read(q, 4)
    expect = torch.zeros(2, 12, dtype=torch.float64).scatter_add_(1, r.index.reshape(2, -1),
                                                                  r.weights.detach().reshape(2, -1))
    torch.testing.assert_close(values.grad, expect[..., None].expand(2, 12, 2))


def test_lru_replacement() -> None:
    dnd = DND(1, 1, capacity=3, backend="torch")
    x = torch.tensor([[[0.0], [10.0], [20.0]]])
    dnd.write(x, x)
    dnd.read(torch.tensor([[[0.1]]]), k=1)  # touch key 0: key 10 is now the least recently used
    slot = dnd.write(torch.tensor([[[30.0]]]), torch.tensor([[[30.0]]]))
    assert slot.tolist() == [[1]]
    assert sorted(dnd.keys[0, :, 0].tolist()) == [0.0, 20.0, 30.0]
    # one write larger than the capacity keeps its newest entries
    slot = dnd.write(torch.arange(5.0).view(1, 5, 1) + 100, torch.zeros(1, 5, 1))
    assert (slot[0, :2] == -1).all() and (slot[0, 2:] >= 0).all()
    assert sorted(dnd.keys[0, :, 0].tolist()) == [102.0, 103.0, 104.0]


def test_writing_existing_key_updates_it() -> None:
    dnd = DND(2, 1, capacity=4, backend="torch")
    dnd.write(torch.tensor([[[0.0, 0.0], [1.0, 1.0]], [[0.0, 0.0], [2.0, 2.0]]]), torch.zeros(2, 2, 1))
    # memory 0: key (1, 1) exists -> updated; memory 1: key (1, 1) is new. Duplicate in-write: last wins.
    slot = dnd.write(torch.tensor([[[1.0, 1.0], [1.0, 1.0]], [[1.0, 1.0], [5.0, 5.0]]]),
                     torch.tensor([[[7.0], [8.0]], [[3.0], [4.0]]]))
    assert slot.tolist() == [[-1, 1], [2, 3]]
    assert dnd.size().tolist() == [2, 4]
    assert dnd.lookup(torch.tensor([[[1.0, 1.0]], [[1.0, 1.0]]]), k=1).flatten().tolist() == [8.0, 3.0]
    no_update = DND(2, 1, backend="torch", update_existing=False)
    no_update.write(torch.zeros(1, 3, 2), torch.zeros(1, 3, 1))
    assert no_update.size().tolist() == [3]


def test_unbounded_memory_grows_and_masked_pairs_are_never_read() -> None:
    dnd = DND(1, 1, backend="torch")
    for t in range(3):
        x = torch.tensor([[[float(t)], [100.0 + t]]])
        dnd.write(x, x, mask=torch.tensor([[True, False]]))
    assert dnd.size().tolist() == [3]
    r = dnd.read(torch.tensor([[[100.0]]]), k=3)
    assert sorted(r.keys[0, 0, :, 0].tolist()) == [0.0, 1.0, 2.0]


@pytest.mark.parametrize("backend", EXACT)
def test_reverse_read_searches_values_and_returns_keys(backend: str) -> None:
    keys, values, _ = filled(2, 80, 2, 3, grid=None, seed=6)
    zq = torch.randn(2, 5, 3, dtype=torch.float64)
    dnd = DND(2, 3, backend=backend)
    dnd.write(keys, values)
    r = dnd.reverse_read(zq, k=4)
    _, i_ref = oracle(values.numpy(), np.ones((2, 80), bool), zq.numpy(), 4)
    np.testing.assert_array_equal(r.index.numpy(), i_ref)
    np.testing.assert_array_equal(r.values.detach().numpy(),
                                  np.take_along_axis(keys.numpy()[:, None], i_ref[..., None], axis=2))
    assert r.lookup().shape == (2, 5, 2)


def test_auto_switches_to_faiss_for_large_memories() -> None:
    keys, values, _ = filled(1, 600, 2, 1, grid=None, seed=7)
    q = torch.randn(1, 20, 2, dtype=torch.float64)
    small, large = DND(2, 1, auto_threshold=10_000), DND(2, 1, auto_threshold=100)
    for d in (small, large):
        d.write(keys, values)
    assert torch.equal(small.read(q, 5).index, large.read(q, 5).index)
    assert set(large._cache) == {"keys"} and not small._cache


def test_bad_input_errors() -> None:
    with pytest.raises(ValueError, match="did you mean 'faiss-hnsw'"):
        DND(2, 1, backend="faiss_hnsw")
    dnd = DND(2, 1)
    with pytest.raises(RuntimeError, match="empty DND"):
        dnd.read(torch.zeros(1, 1, 2), 1)
    with pytest.raises(ValueError, match=r"expected shape \[B, N, 2\], got \(1, 4, 3\)"):
        dnd.write(torch.zeros(1, 4, 3), torch.zeros(1, 4, 1))
    with pytest.raises(ValueError, match="NaN"):
        dnd.write(torch.full((1, 4, 2), float("nan")), torch.zeros(1, 4, 1))
    with pytest.raises(ValueError, match="mask"):
        dnd.write(torch.zeros(1, 4, 2), torch.zeros(1, 4, 1), mask=torch.ones(1, 4))
    dnd.write(torch.zeros(1, 4, 2), torch.zeros(1, 4, 1))
    with pytest.raises(ValueError, match="batch size 1"):
        dnd.read(torch.zeros(2, 1, 2), 1)
    with pytest.raises(ValueError, match="positive int"):
        dnd.read(torch.zeros(1, 1, 2), 0)


@pytest.mark.parametrize("first,second", [("torch", "faiss"), ("faiss", "torch")])
def test_torch_faiss_import_order(first: str, second: str) -> None:
    """FAISS and torch in one process can crash depending on import order / OpenMP (NOTES.md)."""
    code = textwrap.dedent(f"""
        import {first}, {second}
        import numpy as np
        x = np.random.default_rng(0).standard_normal((2000, 8)).astype("float32")
        index = faiss.IndexFlatL2(8); index.add(x)
        _, i = index.search(x[:50], 3)
        t = torch.from_numpy(x)
        d = torch.cdist(t[:50], t).topk(3, largest=False).indices.numpy()
        assert (i[:, 0] == np.arange(50)).all() and (d[:, 0] == i[:, 0]).all()
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


# ------------------------------------------------------------------------------------------------
# property-based: random write/read sequences against a per-entry Python model of the DND


class _ReferenceDND:
    """The DND's documented semantics, one entry at a time: slots, LRU clock, exact-key replacement."""

    def __init__(self, B: int, capacity: int | None) -> None:
        self.capacity, self.clock = capacity, 0
        n = capacity or 0
        self.slots: list[list[tuple[tuple[float, ...], tuple[float, ...]] | None]] = [[None] * n for _ in range(B)]
        self.used = [[-1] * n for _ in range(B)]

    def write(self, keys: np.ndarray, values: np.ndarray, mask: np.ndarray) -> np.ndarray:
        B, N = mask.shape
        self.clock += 1
        out = np.full((B, N), -1, dtype=np.int64)
        if self.capacity is None:
            for b in range(B):
                self.slots[b] += [None] * N
                self.used[b] += [-1] * N
        for b in range(B):
            mem, used = self.slots[b], self.used[b]
            C_old = len(mem) - (N if self.capacity is None else 0)
            pairs = [(n, tuple(keys[b, n]), tuple(values[b, n])) for n in range(N) if mask[b, n]]
            last = {kk: n for n, kk, _ in pairs}  # within one write the last of equal keys wins
            pairs = [p for p in pairs if last[p[1]] == p[0]]
            stored = {e[0]: s for s, e in enumerate(mem) if e is not None}
            upd = [(n, kk, v, stored[kk]) for n, kk, v in pairs if kk in stored]
            fresh = [(n, kk, v) for n, kk, v in pairs if kk not in stored]
            for n, kk, v, s in upd:
                used[s] = self.clock
                mem[s], out[b, n] = (kk, v), s
            if self.capacity is None:
                free = [C_old + n for n, _, _ in fresh]
            else:
                order = sorted(range(len(mem)), key=lambda s: (used[s], s))  # empty (-1) first, then LRU
                room = len(mem) - len(upd)
                fresh = fresh[max(0, len(fresh) - room):]  # one write over capacity: its oldest pairs drop
                free = order[: len(fresh)]
            for (n, kk, v), s in zip(fresh, free):
                mem[s], used[s], out[b, n] = (kk, v), self.clock, s
        return out

    def read(self, queries: np.ndarray, k: int, reverse: bool) -> tuple[np.ndarray, np.ndarray]:
        self.clock += 1
        B, Q = queries.shape[:2]
        d_out, i_out = np.full((B, Q, k), np.inf), np.full((B, Q, k), -1, dtype=np.int64)
        for b in range(B):
            live = [(s, e) for s, e in enumerate(self.slots[b]) if e is not None]
            for q in range(Q):
                cand = sorted((float(((queries[b, q] - np.array(e[1 if reverse else 0])) ** 2).sum()), s)
                              for s, e in live)[:k]
                for j, (d, s) in enumerate(cand):
                    d_out[b, q, j], i_out[b, q, j] = d, s
                    self.used[b][s] = self.clock
        return d_out, i_out


def _draw(rng: np.random.Generator, grid: bool, shape: tuple[int, ...]) -> np.ndarray:
    return rng.integers(-2, 3, shape).astype(np.float64) if grid else rng.standard_normal(shape)


@st.composite
def _dnd_program(draw):
    B = draw(st.integers(1, 3))
    kd, vd = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    capacity = draw(st.one_of(st.none(), st.integers(1, 12)))
    grid = draw(st.booleans())  # small integer grid: exact duplicate keys and distance ties
    ops = []
    for _ in range(draw(st.integers(1, 6))):
        if draw(st.booleans()):
            N = draw(st.integers(1, 8))
            ops.append(("write", N, draw(st.integers(0, 2**31 - 1))))
        else:
            ops.append((draw(st.sampled_from(["read", "reverse"])), draw(st.integers(1, 5)),
                        draw(st.integers(1, 6)), draw(st.integers(0, 2**31 - 1))))
    return B, kd, vd, capacity, grid, ops


@pytest.mark.parametrize("backend", EXACT)
@given(program=_dnd_program())
def test_property_random_writes_and_reads_match_the_reference(backend: str, program) -> None:
    B, kd, vd, capacity, grid, ops = program
    dnd = DND(key_dim=kd, value_dim=vd, capacity=capacity, backend=backend, delta=1e-3)
    ref = _ReferenceDND(B, capacity)
    written = False
    for op in ops:
        if op[0] == "write":
            _, N, seed = op
            rng = np.random.default_rng(seed)
            keys, values = (_draw(rng, grid, (B, N, d)) for d in (kd, vd))
            mask = rng.random((B, N)) < 0.85
            slot = dnd.write(torch.from_numpy(keys), torch.from_numpy(values), torch.from_numpy(mask))
            np.testing.assert_array_equal(slot.numpy(), ref.write(keys, values, mask))
            written = True  # reads before the first write are an error (tested elsewhere)
            continue
        if not written:
            continue
        kind, Q, k, seed = op
        rng = np.random.default_rng(seed)
        dim = vd if kind == "reverse" else kd
        q = _draw(rng, grid, (B, Q, dim))
        r = (dnd.reverse_read if kind == "reverse" else dnd.read)(torch.from_numpy(q), k)
        d_ref, i_ref = ref.read(q, k, reverse=kind == "reverse")
        np.testing.assert_allclose(r.sq_dist.numpy(), d_ref, rtol=1e-12, atol=1e-12)
        np.testing.assert_array_equal(r.index.numpy(), i_ref)  # ties: lower slot first, both backends
        # the kernel read over the retrieved entries, w ∝ 1/(d² + δ)
        w = np.where(np.isfinite(d_ref), 1.0 / (np.where(np.isfinite(d_ref), d_ref, 0) + 1e-3), 0.0)
        np.testing.assert_allclose(r.weights.numpy(), w / np.maximum(w.sum(-1, keepdims=True), 1e-300), rtol=1e-10,
                                   atol=1e-12)  # an empty memory reads all-zero weights
    # the stored entries equal the reference's, slot by slot
    if dnd.keys is not None:
        for b in range(B):
            for s, e in enumerate(ref.slots[b]):
                assert bool(dnd.valid[b, s]) == (e is not None)
                if e is not None:
                    np.testing.assert_array_equal(dnd.keys[b, s].numpy(), e[0])
                    np.testing.assert_array_equal(dnd.values[b, s].numpy(), e[1])


# ------------------------------------------------------------------------------------------------
# approximate backends: stated recall of the defaults, never -1 while a memory holds >= k entries (#19)


@pytest.mark.parametrize("backend", ["faiss-hnsw", "faiss-ivf"])
def test_default_recall_at_1e4_keys_d16(backend: str) -> None:
    """The recall the module docstring states for the defaults (hnsw 0.9994, ivf 0.9914 at seed 0)."""
    from worldmodels.memory import recall_at_k

    assert recall_at_k(backend, 10**4, 16, k=5, queries=1000) >= 0.95


def _clustered(B: int, n: int, d: int, seed: int) -> torch.Tensor:
    """Keys in a few tight, unequal clusters: IVF lists of very different sizes, many almost empty."""
    g = torch.Generator().manual_seed(seed)
    centres = 10 * torch.randn(B, 5, d, generator=g, dtype=torch.float64)
    which = (torch.rand(B, n, generator=g) ** 3 * 5).long()  # cluster 0 holds most of the keys
    return centres.gather(1, which[..., None].expand(B, n, d)) + 0.1 * torch.randn(B, n, d, generator=g,
                                                                                    dtype=torch.float64)


@pytest.mark.parametrize("backend,opts", [
    ("faiss-ivf", {}),  # defaults: nlist = 1 below 78 entries, then min(4 √n, n / 39)
    ("faiss-ivf", {"nlist": 16, "nprobe": 1}),  # one visited list of ~n/16 entries: fewer than k for small n
    ("faiss-ivf", {"nlist": 64}),  # more lists than entries for the small sizes (clamped to n)
    ("faiss-hnsw", {}),
    ("faiss-hnsw", {"hnsw_m": 4, "ef_construction": 8, "ef_search": 1}),
])
@pytest.mark.parametrize("n", [5, 6, 15, 16, 17, 39, 64, 78, 100, 400])
def test_approximate_reads_return_min_k_size_entries(backend: str, opts: dict, n: int) -> None:
    k = 5
    for data in ("gaussian", "clustered"):
        keys = _clustered(2, n + 7, 3, seed=n) if data == "clustered" else filled(2, n + 7, 3, 1, None, seed=n)[0]
        mask = torch.ones(2, n + 7, dtype=torch.bool)
        mask[0, :7] = False  # memory 0 holds n entries, from slot 7 on; memory 1 holds n + 7
        mask[1, ::3] &= n >= 16  # and memory 1 drops a third of its slots for the larger sizes
        dnd = DND(3, 1, backend=backend, update_existing=False, **opts)
        dnd.write(keys, torch.zeros(2, n + 7, 1, dtype=torch.float64), mask)
        size = dnd.size()
        q = torch.cat([keys[:, :20], 30 * torch.randn(2, 20, 3, dtype=torch.float64)], 1)  # near and far queries
        r = dnd.read(q, k)
        for b in range(2):
            want = min(k, int(size[b]))
            assert (r.valid[b].sum(-1) == want).all(), (data, b, r.index[b])
            assert (r.index[b, :, :want] >= 0).all() and (r.index[b, :, want:] == -1).all()
            assert mask[b][r.index[b, :, :want]].all()  # only stored entries
            picked = r.index[b, :, :want]
            assert (picked.sort(-1).values.diff(dim=-1) > 0).all()  # k distinct entries per query


@pytest.mark.parametrize("k", [700, 1999, 2000])
def test_ivf_defaults_with_k_beyond_the_visited_lists(k: int) -> None:
    """2000 entries in 51 lists, 13 visited (~510 entries): a k above that is still answered in full."""
    keys, values, _ = filled(1, 2000, 3, 1, None, seed=10)
    dnd = DND(3, 1, backend="faiss-ivf", update_existing=False)
    dnd.write(keys, values)
    r = dnd.read(torch.randn(1, 30, 3, dtype=torch.float64), k)
    assert r.valid.all() and (r.index.sort(-1).values.diff(dim=-1) > 0).all()


def test_ivf_nlist_above_size_and_bad_options() -> None:
    keys, values, _ = filled(1, 10, 2, 1, None, seed=9)
    dnd = DND(2, 1, backend="faiss-ivf", nlist=64, nprobe=1)  # more lists than entries: clamped to 10
    dnd.write(keys, values)
    _, ref = oracle(keys.numpy(), np.ones((1, 10), bool), keys.numpy(), 3)
    np.testing.assert_array_equal(dnd.read(keys, 3).index.numpy(), ref)  # one entry per list: exact fallback
    for name in ("nlist", "nprobe", "ef_search", "hnsw_m", "ef_construction"):
        with pytest.raises(ValueError, match=rf"{name}: expected a positive int, got 0"):
            DND(2, 1, backend="faiss-ivf", **{name: 0})
