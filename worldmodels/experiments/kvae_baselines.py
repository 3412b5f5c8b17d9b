"""AE-RNN and VAE-RNN baselines of thesis §6.5.1 for the KVAE imputation experiments (``kvae-ball``).

Both use the KVAE's auto-encoder architecture (3 conv layers of 32 channels, stride 2, a 2-d code,
sub-pixel decoder: :class:`worldmodels.nn.KVAEConvEncoder` / :class:`~worldmodels.nn.KVAEConvDecoder`, the
``encoder``/``decoder`` of :class:`worldmodels.models.kvae.KVAE`), pre-trained per frame, then an LSTM over
the codes:

* **AE-RNN** (after Srivastava et al., 2015): a deterministic auto-encoder; the LSTM predicts the next
  code from the previous one (teacher forcing, squared error).
* **VAE-RNN** (after Chung et al., 2015): the same with a VAE (``q(a|x) = N(mu, diag sigma^2)``, prior
  ``N(0, I)``); the LSTM is trained on the posterior means.

Imputation (as filtering in the KVAE): at each step the LSTM receives the code of the previous frame
when it was observed, otherwise its own previous prediction; a missing frame is the decoded prediction.

Why :class:`CodeRNN` is experiment code and not a registered model of :mod:`worldmodels.models`: it cannot
honestly answer :class:`worldmodels.api.WorldModel`. Its ``loss`` would have to be a negative ELBO per step
that :class:`worldmodels.train.Trainer` minimises, but the AE-RNN has no likelihood at all (a deterministic
auto-encoder and a squared-error LSTM) and the VAE-RNN's only ELBO is the per-frame VAE's (the LSTM is no
generative model of the sequence); both are trained in two stages with two optimisers on different batches
(frames, then code sequences), which one loss cannot express without changing the recipe; and they take no
control input. They exist to be compared on imputation, which :meth:`CodeRNN.method` and
:meth:`CodeRNN.impute` do.

Checkpoints: ``runs/kvae_<name>_aernn`` and ``..._vaernn`` hold ``model.safetensors`` and ``info.json``;
:func:`load` rebuilds a trained one.

Example:
    >>> import torch
    >>> model = CodeRNN((1, 16, 16), variational=True)
    >>> x = torch.rand(2, 6, 1, 16, 16).round()
    >>> mask = torch.tensor([[1, 1, 0, 0, 1, 0]] * 2).bool()
    >>> model.impute(x, torch.zeros(2, 6, 0), mask).shape, model.label
    (torch.Size([2, 6, 1, 16, 16]), 'VAE-RNN')
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from worldmodels.experiments import kvae_common as kc
from worldmodels.files import atomic_save, write_json
from worldmodels.nn import KVAEConvDecoder, KVAEConvEncoder

LABELS = {"aernn": "AE-RNN", "vaernn": "VAE-RNN"}


class CodeRNN(nn.Module):
    """An auto-encoder (``variational`` or not) with an LSTM over its codes.

    Parameters: ``encoder.*`` (``conv``, ``mean``, ``var``), ``decoder.*`` (those of the KVAE's), ``lstm.*``,
    ``head.*``.
    """

    def __init__(self, obs_shape: tuple[int, ...], variational: bool, a_dim: int = 2, units: int = 64) -> None:
        super().__init__()
        if len(obs_shape) != 3:
            raise ValueError(f"CodeRNN: expected image frames (C, H, W), received obs_shape {tuple(obs_shape)}")
        # the KVAE's §6.8 auto-encoder (KVAEConfig's filters) with a variance head bounded by 1; built first,
        # encoder then decoder, so the initial weights are those of the KVAE-built CodeRNN of before
        self.encoder = KVAEConvEncoder(obs_shape, a_dim, filters=(32, 32, 32), var_scale=1.0)
        self.decoder = KVAEConvDecoder(a_dim, obs_shape, filters=(32, 32, 32))
        self.lstm = nn.LSTMCell(a_dim, units)
        self.head = nn.Linear(units, a_dim)
        self.variational = variational
        self.units = units
        self.label = LABELS["vaernn" if variational else "aernn"]

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x [N, C, H, W] -> (mean, log variance)`` of the code; the encoder's ``var`` head gives the latter."""
        h = self.encoder.conv(x.contiguous(memory_format=torch.channels_last)).flatten(1)  # [N, F]
        return self.encoder.mean(h), self.encoder.var(h)

    def ae_loss(self, x: torch.Tensor) -> torch.Tensor:
        """Negative ELBO (VAE) or reconstruction loss (AE) per frame."""
        mu, logvar = self.encode(x)
        a = mu + (0.5 * logvar).exp() * torch.randn_like(mu) if self.variational else mu
        logits = self.decoder(a)
        rec = nn.functional.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)
        if self.variational:
            kl = 0.5 * (mu**2 + logvar.exp() - 1 - logvar).sum(1)
            rec = rec + kl
        return rec.mean()

    def rnn_loss(self, a: torch.Tensor) -> torch.Tensor:
        """Teacher-forced next-code prediction error on codes ``a [B, T, a]``."""
        B, T, _ = a.shape
        h = (a.new_zeros(B, self.units), a.new_zeros(B, self.units))
        err = a.new_zeros(())
        for t in range(1, T):
            h = self.lstm(a[:, t - 1], h)
            err = err + ((self.head(h[0]) - a[:, t]) ** 2).sum(-1).mean()
        return err / (T - 1)

    @torch.no_grad()
    def method(self, x: torch.Tensor, u: torch.Tensor) -> Callable[[torch.Tensor], dict[str, torch.Tensor]]:
        """Imputation method (:data:`kvae_common.Method`) for :func:`kvae_common.imputation_curves`
        (frame 0 must be observed)."""
        B, T = x.shape[:2]
        codes = self.encode(x.reshape(B * T, *x.shape[2:]))[0].view(B, T, -1)

        def f(mask: torch.Tensor) -> dict[str, torch.Tensor]:
            h = (x.new_zeros(B, self.units), x.new_zeros(B, self.units))
            prev, pred = codes[:, 0], [codes[:, 0]]
            for t in range(1, T):
                h = self.lstm(prev, h)
                p = self.head(h[0])
                pred.append(p)
                prev = torch.where(mask[:, t, None], codes[:, t], p)
            a = torch.stack(pred, 1)[~mask]  # [M, a]
            return {self.label: torch.sigmoid(self.decoder(a)) if len(a) else x[~mask]}

        return f

    @torch.no_grad()
    def impute(self, x: torch.Tensor, u: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Fill the missing frames of ``x [B, T, C, H, W]`` (``mask [B, T]``)."""
        out = x.clone()
        out[~mask] = self.method(x, u)(mask)[self.label]
        return out


def train_one(kind: str, obs: torch.Tensor, out: Path, steps: int, seed: int) -> CodeRNN:
    """Pre-train the auto-encoder on single frames, then the LSTM on the codes; save to ``out``
    (a folder that already holds a trained one is loaded instead)."""
    if kind not in LABELS:
        raise ValueError(f"kvae baselines: expected a kind in {sorted(LABELS)}, received {kind!r}")
    if (out / "model.safetensors").exists():
        return load(out)
    torch.manual_seed(seed)
    model = CodeRNN(tuple(obs.shape[2:]), variational=kind == "vaernn")
    frames = obs.reshape(-1, *obs.shape[2:])
    ae_params = list(model.encoder.parameters()) + list(model.decoder.parameters())
    opt = torch.optim.Adam(ae_params, lr=2e-3)
    bar = tqdm(range(steps), desc=f"{kind} auto-encoder")
    for s in bar:
        x = frames[torch.randint(0, frames.shape[0], (64,))].float()
        loss = model.ae_loss(x)
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(ae_params, 150.0)
        opt.step()
        if s % 50 == 0:
            bar.set_postfix(loss=f"{float(loss.detach()):.2f}")
    with torch.no_grad():
        codes = torch.cat([model.encode(frames[i : i + 2000].float())[0] for i in range(0, len(frames), 2000)])
    codes = codes.view(obs.shape[0], obs.shape[1], -1)
    rnn_params = list(model.lstm.parameters()) + list(model.head.parameters())
    opt = torch.optim.Adam(rnn_params, lr=3e-3)
    bar = tqdm(range(2 * steps), desc=f"{kind} LSTM")
    for s in bar:
        loss = model.rnn_loss(codes[torch.randint(0, codes.shape[0], (64,))])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if s % 50 == 0:
            bar.set_postfix(loss=f"{float(loss.detach()):.4f}")
    info = {"kind": kind, "label": model.label, "obs_shape": list(obs.shape[2:]), "ae_steps": steps,
            "lstm_steps": 2 * steps, "seed": seed, "train_sequences": int(obs.shape[0]), "batch": 64,
            "lstm_units": model.units, "final_rnn_loss": float(loss.detach())}
    write_json(out / "info.json", info)  # first: a model.safetensors always has its info.json
    weights = {k: v.contiguous() for k, v in model.state_dict().items()}
    atomic_save(out / "model.safetensors", lambda tmp: save_file(weights, str(tmp)))
    return model


def load(path: Path) -> CodeRNN:
    """The trained baseline in ``path`` (``info.json`` + ``model.safetensors``), in eval mode."""
    if not (path / "info.json").exists() or not (path / "model.safetensors").exists():
        raise FileNotFoundError(f"kvae baselines: expected info.json and model.safetensors in {path}")
    info = json.loads((path / "info.json").read_text())
    model = CodeRNN(tuple(info["obs_shape"]), variational=info["kind"] == "vaernn")
    model.load_state_dict(load_file(str(path / "model.safetensors")))
    return model.eval()


def train_all(train_path: Path, run_prefix: Path, steps: int, seed: int) -> None:
    """Train (or keep) both baselines on the dataset ``train_path``: ``<run_prefix>_aernn``, ``..._vaernn``."""
    obs, _ = kc.load_sequences(train_path, use_actions=False)
    for kind in ("aernn", "vaernn"):
        train_one(kind, obs, Path(f"{run_prefix}_{kind}"), steps, seed)
