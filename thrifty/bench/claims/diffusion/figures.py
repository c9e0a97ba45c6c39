"""Figures the diffusion claims save next to the bench report: sample panels and quality against steps."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from thrifty._plotting import pyplot
from thrifty.bench.claim import ClaimContext, Series

__all__ = ["plot_vs_steps", "save_panels"]


def save_panels(
    ctx: ClaimContext, name: str, panels: dict[str, Tensor], kind: str = "points", lim: float = 3.5
) -> str | None:
    """Save 2-D scatter panels (``kind="points"``, axes ``[-lim, lim]``) or image grids (``kind="images"``,
    ``(N, 1, H, W)`` in about [-1, 1]) side by side as ``<out_dir>/<name>.png``; the path, or None without an output
    folder."""
    if ctx.out_dir is None:
        return None
    plt = pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.4), squeeze=False)
    for ax, (title, data) in zip(axes[0], panels.items(), strict=True):
        data = data.detach().cpu()
        if kind == "points":
            pts = data[:2000]
            ax.scatter(pts[:, 0], pts[:, 1], s=1, alpha=0.4)
            ax.set_xlim(-lim, lim)
            ax.set_ylim(-lim, lim)
            ax.set_aspect("equal")
        else:
            imgs = data[:16].reshape(-1, data.shape[-2], data.shape[-1]).clamp(-1.5, 1.5)
            cols = 4 if len(imgs) > 4 else 2
            rows = (len(imgs) + cols - 1) // cols
            h, w = imgs.shape[1:]
            canvas = torch.full((rows * (h + 1), cols * (w + 1)), float("nan"))
            for i, img in enumerate(imgs):
                r, c = divmod(i, cols)
                canvas[r * (h + 1) : r * (h + 1) + h, c * (w + 1) : c * (w + 1) + w] = img
            ax.imshow(canvas.numpy(), cmap="gray", interpolation="nearest")
        ax.set_title(title, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    path = Path(ctx.out_dir) / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return str(path)


def plot_vs_steps(ctx: ClaimContext, name: str, series: list[Series], xlabel: str = "steps") -> str | None:
    """Quality against steps, one panel per metric, seed mean with a min-max band; single points drawn as markers.
    Saved as ``<out_dir>/<name>.png``; None without an output folder."""
    if ctx.out_dir is None:
        return None
    plt = pyplot()
    metrics = list(dict.fromkeys(s.metric for s in series))
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3.8), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        for s in series:
            if s.metric != metric or not s.values:
                continue
            vals = torch.tensor(s.values, dtype=torch.float64)
            x = s.steps[0]
            mean = vals.mean(0)
            (line,) = ax.plot(x, mean, marker="o" if len(x) == 1 else ".", label=f"{s.label} (n={len(s.values)})")
            if len(s.values) > 1 and len(x) > 1:
                ax.fill_between(x, vals.min(0).values, vals.max(0).values, color=line.get_color(), alpha=0.2)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = Path(ctx.out_dir) / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)
