"""The example model of ``docs/adding_a_model.md`` passes the world-model contract, and its usage block runs.

The code is read from the Markdown file (the fenced block after ``<!-- docs-example: model -->`` and the one
after ``<!-- docs-example: usage -->``), so the page cannot drift from what works.
"""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import pytest
import torch

from tests.worldmodels.contract import WorldModelContract
from worldmodels.api import Batch
from worldmodels.models import MODELS, build_model

DOC = Path(__file__).resolve().parents[2] / "docs" / "adding_a_model.md"
MODULE = "worldmodels_docs_example_tiny_ssm"


def doc_block(tag: str) -> str:
    """The fenced ``python`` block right after ``<!-- docs-example: {tag} -->`` in the doc."""
    text = DOC.read_text(encoding="utf-8")
    m = re.search(rf"<!-- docs-example: {re.escape(tag)} -->\s*```python\n(.*?)\n```", text, re.S)
    if m is None:
        raise AssertionError(f"{DOC}: no ```python block after '<!-- docs-example: {tag} -->'")
    return m.group(1)


def example_module() -> types.ModuleType:
    """Execute the doc's model block as a real module (type hints and the registry need one)."""
    mod = sys.modules.get(MODULE)
    if mod is None:
        mod = types.ModuleType(MODULE)
        sys.modules[MODULE] = mod  # before exec: dataclasses and typing.get_type_hints look it up
        exec(compile(doc_block("model"), f"{DOC}:model", "exec"), mod.__dict__)
    return mod


def _batch(B: int, T: int, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    obs = torch.rand(B, T, 1, 8, 8, generator=g).round()
    action = torch.nn.functional.one_hot(torch.randint(0, 3, (B, T), generator=g), 3).float()
    action[:, 0] = 0
    return Batch(obs=obs, action=action)


class TestDocsExampleContract(WorldModelContract):
    """The same subclass the doc shows in its section 4."""

    def make_model(self):
        example_module()
        return build_model("tiny_ssm", "debug", obs_shape=(1, 8, 8), action_dim=3)

    def make_batch(self, B, T, seed=0):
        return _batch(B, T, seed)


def test_example_registers_under_its_name() -> None:
    mod = example_module()
    assert MODELS["tiny_ssm"] is mod.TinySSM
    assert "debug" in mod.TinySSMConfig.PRESETS


def test_usage_block_trains_saves_evaluates_and_plans(one_thread: None) -> None:
    example_module()
    ns: dict[str, object] = {"__name__": "docs_usage"}
    exec(compile(doc_block("usage"), f"{DOC}:usage", "exec"), ns)
    result = ns["result"]
    assert result.step == 6, f"3 epochs of 2 batches should be 6 updates, got {result.step}"  # type: ignore[attr-defined]
    report = ns["report"]
    assert isinstance(report, dict) and len(report["prediction_mse"]) == 5
    assert all(0.0 <= v <= 1.0 for v in report["prediction_mse"])
    assert ns["first_action"] in (0, 1, 2)
    plan = ns["plan"]
    assert tuple(plan.actions.shape) == (6, 3)  # type: ignore[attr-defined]


def test_training_improves_the_example_elbo(one_thread: None) -> None:
    """A real model, not a stub: 60 Adam steps on a fixed batch raise its ELBO by a margin."""
    example_module()
    torch.manual_seed(0)
    model = build_model("tiny_ssm", "debug", obs_shape=(1, 8, 8), action_dim=3)
    batch = _batch(4, 8, seed=3)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    before = model.loss(batch).metrics["elbo"]
    for _ in range(60):
        loss = model.loss(batch).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = model.loss(batch).metrics["elbo"]
    assert after > before + 5.0, f"ELBO per step {before:.2f} -> {after:.2f}"


def test_missing_marker_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = tmp_path / "doc.md"
    bad.write_text("no example here\n", encoding="utf-8")
    monkeypatch.setattr(sys.modules[__name__], "DOC", bad)
    with pytest.raises(AssertionError, match="docs-example: model"):
        doc_block("model")
