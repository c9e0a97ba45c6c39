"""Claims of the training-free diffusion samplers: BOSS (arXiv 2312.16414), AutoDiffusion (arXiv 2309.10438) and
Any-Size-Diffusion's FSTD tiling (arXiv 2308.16582).

Substrates: rectified-flow teachers trained once by ``thrifty.diffusion.core.teachers`` (2-D eight Gaussians, SWD
against fresh data; 8x8 digits, classifier-feature Frechet distance against the digits; tiny teachers at smoke
scale), and a stationary Gaussian random field (32 x 32 canvases) with the exact denoiser of an 8 x 8 window for
tiling. Seeds vary the search/fit noise, fine-tuning order and evaluation noise; the teachers are fixed. Figures and
verdicts are CPU-scale and noisy.
"""

from __future__ import annotations

import copy
import statistics
from pathlib import Path

import torch
from torch import Tensor

from thrifty.bench.claim import HELD, NOT_HELD, Claim, ClaimContext, ClaimOutcome, Series
from thrifty.bench.claims import register
from thrifty.diffusion.core.data import StationaryField, digits_flat, eight_gaussians
from thrifty.diffusion.core.metrics import digits_fd, sliced_wasserstein
from thrifty.diffusion.core.solvers import edm_grid, sample, uniform_grid
from thrifty.diffusion.core.teachers import digits_teacher, toy2d_teacher

# ---------------------------------------------------------------- shared helpers


def _save_panels(ctx: ClaimContext, name: str, panels: dict[str, Tensor], kind: str) -> str | None:
    """Save 2-D scatter panels (``kind="points"``) or image grids (``kind="images"``, ``(N, 1, H, W)`` in about
    [-1, 1]) side by side as ``<out_dir>/<name>.png``; returns the path, or None without an output folder."""
    if ctx.out_dir is None:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.4), squeeze=False)
    for ax, (title, data) in zip(axes[0], panels.items(), strict=True):
        if kind == "points":
            pts = data[:2000].cpu()
            ax.scatter(pts[:, 0], pts[:, 1], s=1, alpha=0.4)
            ax.set_xlim(-3, 3)
            ax.set_ylim(-3, 3)
            ax.set_aspect("equal")
        else:
            imgs = data[:16].reshape(-1, data.shape[-2], data.shape[-1]).cpu().clamp(-1.5, 1.5)
            cols = 4 if len(imgs) > 4 else 2
            rows = (len(imgs) + cols - 1) // cols
            h, w = imgs.shape[1:]
            canvas = torch.full((rows * (h + 1), cols * (w + 1)), float("nan"))
            for i, img in enumerate(imgs):
                r, c = divmod(i, cols)
                canvas[r * (h + 1) : r * (h + 1) + h, c * (w + 1) : c * (w + 1) + w] = img
            ax.imshow(canvas.numpy(), cmap="gray", interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    Path(ctx.out_dir).mkdir(parents=True, exist_ok=True)
    path = Path(ctx.out_dir) / f"{name}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


def _plot_vs_steps(ctx: ClaimContext, name: str, series: list[Series], xlabel: str = "steps") -> str | None:
    """Quality against steps, one panel per metric, seed mean with min-max band; single points drawn as markers.
    Saved as ``<out_dir>/<name>.png``; None without an output folder."""
    if ctx.out_dir is None:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    Path(ctx.out_dir).mkdir(parents=True, exist_ok=True)
    path = Path(ctx.out_dir) / f"{name}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


def _mean(values: list[float]) -> float:
    return statistics.fmean(values)


# smoke scale (tests) uses tiny teachers trained in about a second and cached under their own names
SMOKE_TEACHERS = {
    "2d": {"hidden": 32, "depth": 2, "steps": 200, "batch_size": 128, "lr": 3e-3},
    "digits": {"hidden": 64, "depth": 2, "steps": 200, "batch_size": 128, "lr": 3e-3},
}


class _Substrate:
    """A teacher with its noise shape and its metric against held-out reference data."""

    def __init__(self, name: str, n_eval: int, scale: str = "quick") -> None:
        self.name = name
        config = SMOKE_TEACHERS[name] if scale == "smoke" else None
        if name == "2d":
            self.teacher, self.dim, self.kind = toy2d_teacher("eight_gaussians", config=config), 2, "points"
            self.mix = eight_gaussians()
        else:
            self.teacher, self.dim, self.kind = digits_teacher(config=config), 64, "images"
            self.reference = digits_flat("train")[0]
        self.n_eval = n_eval
        self.metric_name = "SWD" if name == "2d" else "classifier-FD"

    def noise(self, n: int, gen: torch.Generator) -> Tensor:
        return torch.randn(n, self.dim, generator=gen)

    def score(self, samples: Tensor, seed: int) -> float:
        if self.name == "2d":
            gen = torch.Generator().manual_seed(10_000 + seed)
            return sliced_wasserstein(samples, self.mix.sample(len(samples), gen), 256, gen)
        return digits_fd(samples, self.reference)

    def show(self, samples: Tensor) -> Tensor:
        return samples if self.kind == "points" else samples.reshape(-1, 1, 8, 8)


# ---------------------------------------------------------------- BOSS

BOSS_SCALES = {
    # steps, reference-trajectory samples, eval samples (2-D, digits), straightening iterations
    "smoke": ([2, 4], 20, (256, 128), 5),
    "quick": ([2, 3, 4, 6, 8], 100, (2000, 1000), 300),
    "full": ([2, 3, 4, 5, 6, 8, 10], 100, (10_000, 2000), 3000),
}
BOSS_K_MAX = 100
BOSS_STEPS = 4
BOSS_LR = 1e-4


def boss_claim(ctx: ClaimContext) -> ClaimOutcome:
    from thrifty.diffusion.sampling.boss import BellmanStepSizes, straighten

    steps_list, n_ref, n_evals, iters = BOSS_SCALES[ctx.scale]
    substrates = [_Substrate("2d", n_evals[0], ctx.scale), _Substrate("digits", n_evals[1], ctx.scale)]
    advance = ctx.track("BOSS (substrates x seeds)", len(substrates) * len(ctx.seeds))
    per_seed: dict[str, list[float]] = {}
    series: list[Series] = []
    details: dict[str, object] = {}
    checks = []
    metrics: dict[str, float] = {}
    for sub in substrates:
        curves = {g: Series(label=f"{sub.name} {g}", metric=sub.metric_name) for g in ("uniform", "edm", "boss")}
        straight = Series(label=f"{sub.name} boss+straightening", metric=sub.metric_name)
        grids_seen = []
        for seed in ctx.seeds:
            gen = torch.Generator().manual_seed(seed)
            bellman = BellmanStepSizes(sub.teacher, BOSS_K_MAX, "uniform").fit(sub.noise(n_ref, gen))
            noise = sub.noise(sub.n_eval, gen)
            values: dict[str, list[float]] = {g: [] for g in curves}
            shown: dict[str, Tensor] = {}
            with torch.no_grad():
                for k in steps_list:
                    grids = {
                        "uniform": uniform_grid(k),
                        "edm": edm_grid(k, sub.teacher.schedule),
                        "boss": bellman.grid(k),
                    }
                    for g, grid in grids.items():
                        out = sample(sub.teacher, noise, grid)
                        values[g].append(sub.score(out, seed))
                        if k == BOSS_STEPS:
                            shown[g] = out
                    if k == BOSS_STEPS:
                        grids_seen.append([round(t, 3) for t in bellman.grid(k).tolist()])
            for g in curves:
                curves[g].add(steps_list, [0.0] * len(steps_list), values[g])
                per_seed.setdefault(f"{sub.name}_{g}_K{BOSS_STEPS}", []).append(values[g][steps_list.index(BOSS_STEPS)])
            student = copy.deepcopy(sub.teacher).requires_grad_(True)
            straighten(
                student,
                bellman.grid(BOSS_STEPS),
                lambda n, g, s=sub: s.noise(n, g),
                bellman.reference,
                iterations=iters,
                lr=BOSS_LR,
                seed=seed,
            )
            with torch.no_grad():
                out = sample(student, noise, bellman.grid(BOSS_STEPS))
            shown["boss+straightening"] = out
            value = sub.score(out, seed)
            straight.add([BOSS_STEPS], [0.0], [value])
            per_seed.setdefault(f"{sub.name}_boss_straightened_K{BOSS_STEPS}", []).append(value)
            if seed == ctx.seeds[0]:
                details[f"{sub.name}_samples_png"] = _save_panels(
                    ctx, f"boss_{sub.name}_K{BOSS_STEPS}", {g: sub.show(v) for g, v in shown.items()}, sub.kind
                )
            advance(1)
        series += [*curves.values(), straight]
        m = {g: _mean(per_seed[f"{sub.name}_{g}_K{BOSS_STEPS}"]) for g in ("uniform", "edm", "boss")}
        m["straightened"] = _mean(per_seed[f"{sub.name}_boss_straightened_K{BOSS_STEPS}"])
        for g, v in m.items():
            metrics[f"{sub.name}_{g}_K{BOSS_STEPS}"] = v
        checks.append((sub.name, m["boss"] < m["uniform"] and m["boss"] < m["edm"], m["straightened"] < m["boss"], m))
        details[f"{sub.name}_bellman_grids_K{BOSS_STEPS}"] = grids_seen
    details["quality_vs_steps_png"] = _plot_vs_steps(ctx, "boss_quality_vs_steps", series)
    held = all(beats and improves for _, beats, improves, _ in checks)
    summary = "; ".join(
        f"{name} {substrates[i].metric_name} at K={BOSS_STEPS}: uniform {m['uniform']:.3g}, EDM {m['edm']:.3g}, "
        f"Bellman {m['boss']:.3g}, +straightening {m['straightened']:.3g}"
        for i, (name, _, _, m) in enumerate(checks)
    )
    return ClaimOutcome(
        HELD if held else NOT_HELD,
        summary + " (held if Bellman < uniform and < EDM and straightening < Bellman on both substrates)",
        metrics=metrics,
        per_seed=per_seed,
        series=series,
        details={
            **details,
            "workload": "rectified-flow TimeMLP teachers (2-D eight Gaussians; 8x8 digits as 64-d rows), Euler "
            f"sampling; Bellman grid from a uniform {BOSS_K_MAX}-step reference, {n_ref} reference trajectories; "
            f"straightening: {iters} Adam steps (lr {BOSS_LR:g}, batch 256) on 2048 reference trajectories' chosen "
            "intervals; SWD with 256 projections against fresh data; classifier-FD against the 1,437 training digits",
            "checks": {
                name: {"bellman_beats_uniform_and_edm": b, "straightening_improves": s} for name, b, s, _ in checks
            },
            "scale": "measured, CPU",
        },
    )


register(
    Claim(
        key="boss",
        statement="First, this technique involves a dynamic programming algorithm that optimizes the step sizes of the "
        "pretrained network. Then, it refines the velocity network to match the optimal step sizes, aiming to "
        "straighten the generation paths.",
        measures=f"sample quality at {BOSS_STEPS} Euler steps of rectified-flow teachers with the uniform, EDM and "
        "Bellman-optimal grids, and after straightening on the Bellman grid: SWD on 2-D eight Gaussians, "
        "classifier-feature Frechet distance on 8x8 digits; quality against steps plotted",
        threshold=f"seed means at K={BOSS_STEPS}: Bellman < uniform and Bellman < EDM, and straightened < Bellman, on "
        "both substrates",
        run=boss_claim,
        default=False,
    )
)

# ---------------------------------------------------------------- AutoDiffusion

AUTODIFF_SCALES = {
    # steps, population, epochs, search samples (2-D, digits), held-out samples (2-D, digits)
    "smoke": ([2, 4], 8, 2, (128, 64), (256, 128)),
    "quick": ([2, 3, 4], 50, 10, (500, 300), (2000, 1000)),
    "full": ([2, 3, 4, 6], 50, 10, (2000, 1000), (10_000, 2000)),
}
AUTODIFF_STEPS = 4


def autodiffusion_claim(ctx: ClaimContext) -> ClaimOutcome:
    from thrifty.diffusion.sampling.autodiffusion import AutoDiffusionSearch, digits_fd_fitness, swd_fitness

    steps_list, population, epochs, n_search, n_held = AUTODIFF_SCALES[ctx.scale]
    val_digits = digits_flat("val")[0]
    train_digits = digits_flat("train")[0]
    subs = [_Substrate("2d", n_held[0], ctx.scale), _Substrate("digits", n_held[1], ctx.scale)]
    advance = ctx.track("AutoDiffusion searches", len(subs) * len(ctx.seeds) * len(steps_list))
    per_seed: dict[str, list[float]] = {}
    series: list[Series] = []
    metrics: dict[str, float] = {}
    details: dict[str, object] = {}
    checks = {}
    for i, sub in enumerate(subs):
        curves = {
            g: Series(label=f"{sub.name} {g}", metric=f"held-out {sub.metric_name}") for g in ("uniform", "searched")
        }
        history = Series(label=f"{sub.name} search best fitness (K={AUTODIFF_STEPS})", metric="fitness")
        for seed in ctx.seeds:
            gen = torch.Generator().manual_seed(seed)
            if sub.name == "2d":
                fit = swd_fitness(sub.mix.sample(n_search[i], gen), seed=seed)
                held_ref = sub.mix.sample(n_held[i], gen)

                def held(x: Tensor, ref: Tensor = held_ref, s: int = seed) -> float:
                    return sliced_wasserstein(x, ref, 256, torch.Generator().manual_seed(20_000 + s))
            else:
                fit = digits_fd_fitness(train_digits)

                def held(x: Tensor) -> float:
                    return digits_fd(x, val_digits)

            search_noise, held_noise = sub.noise(n_search[i], gen), sub.noise(n_held[i], gen)
            values: dict[str, list[float]] = {"uniform": [], "searched": []}
            for k in steps_list:
                search = AutoDiffusionSearch(
                    sub.teacher,
                    k,
                    fit,
                    population=population,
                    epochs=epochs,
                    seed=seed,
                    mutation_num=population // 2,
                    crossover_num=(3 * population) // 10,
                )
                result = search.search(search_noise)
                with torch.no_grad():
                    out_u = sample(sub.teacher, held_noise, uniform_grid(k))
                    out_s = sample(sub.teacher, held_noise, result.grid)
                values["uniform"].append(held(out_u))
                values["searched"].append(held(out_s))
                if k == AUTODIFF_STEPS:
                    history.add(list(range(len(result.history))), [0.0] * len(result.history), result.history)
                    details.setdefault(f"{sub.name}_searched_grids_K{k}", []).append(
                        [round(t, 3) for t in result.grid.tolist()]
                    )
                    details.setdefault(f"{sub.name}_evaluations_K{k}", []).append(result.evaluations)
                    if seed == ctx.seeds[0]:
                        details[f"{sub.name}_samples_png"] = _save_panels(
                            ctx,
                            f"autodiffusion_{sub.name}_K{k}",
                            {"uniform": sub.show(out_u), "searched": sub.show(out_s)},
                            sub.kind,
                        )
                advance(1)
            for g in curves:
                curves[g].add(steps_list, [0.0] * len(steps_list), values[g])
                per_seed.setdefault(f"{sub.name}_{g}_K{AUTODIFF_STEPS}", []).append(
                    values[g][steps_list.index(AUTODIFF_STEPS)]
                )
        series += [*curves.values(), history]
        u = _mean(per_seed[f"{sub.name}_uniform_K{AUTODIFF_STEPS}"])
        s = _mean(per_seed[f"{sub.name}_searched_K{AUTODIFF_STEPS}"])
        metrics[f"{sub.name}_uniform_K{AUTODIFF_STEPS}"], metrics[f"{sub.name}_searched_K{AUTODIFF_STEPS}"] = u, s
        checks[sub.name] = s < u
    details["quality_vs_steps_png"] = _plot_vs_steps(
        ctx, "autodiffusion_quality_vs_steps", [x for x in series if x.metric != "fitness"]
    )
    details["search_history_png"] = _plot_vs_steps(
        ctx, "autodiffusion_search_history", [x for x in series if x.metric == "fitness"], "epoch"
    )
    held_all = all(checks.values())
    summary = "; ".join(
        f"{sub.name} held-out {sub.metric_name} at K={AUTODIFF_STEPS}: uniform "
        f"{metrics[f'{sub.name}_uniform_K{AUTODIFF_STEPS}']:.3g}, searched "
        f"{metrics[f'{sub.name}_searched_K{AUTODIFF_STEPS}']:.3g}"
        for sub in subs
    )
    return ClaimOutcome(
        HELD if held_all else NOT_HELD,
        summary + " (held if searched < uniform on both substrates)",
        metrics=metrics,
        per_seed=per_seed,
        series=series,
        details={
            **details,
            "workload": f"evolutionary search (population {population}, top-10 parents, {population // 2} mutants "
            f"with m_prob 0.25, {(3 * population) // 10} crossovers, random refill, {epochs} epochs; uniform-seeded "
            "initial population) of the K - 1 interior times of an Euler grid [1, ..., 0] over 999 levels; fitness "
            f"on {n_search} search samples: SWD to fresh 2-D data / classifier-FD to the training digits; held-out: "
            f"fresh noise ({n_held}), fresh 2-D data / the 360 validation digits",
            "checks": checks,
            "scale": "measured, CPU",
        },
    )


register(
    Claim(
        key="autodiffusion",
        statement="We consider that such a uniform assumption is not the optimal solution in practice; i.e., we can "
        "find different optimal time steps for different models.",
        measures=f"held-out sample quality (fresh noise and fresh reference data) of the {AUTODIFF_STEPS}-step time "
        "grid found by AutoDiffusion's evolutionary search with an FID-proxy fitness, against the uniform grid, on "
        "rectified-flow teachers (2-D eight Gaussians: SWD; 8x8 digits: classifier-feature FD)",
        threshold=f"seed means at K={AUTODIFF_STEPS}: searched < uniform on both substrates",
        run=autodiffusion_claim,
        default=False,
    )
)

# ---------------------------------------------------------------- Any-Size (FSTD)

ANY_SIZE_SCALES = {
    # steps, canvases, canvas side
    "smoke": ([4, 8], 8, 24),
    "quick": ([8, 16, 32, 64], 64, 32),
    "full": ([8, 16, 32, 64, 128], 256, 64),
}
ANY_SIZE_TILE, ANY_SIZE_OVERLAP, ANY_SIZE_RESET = 8, 4, 4


def _patches(canvas: Tensor, n: int, gen: torch.Generator, size: int) -> Tensor:
    b, _, h, w = canvas.shape
    i = torch.randint(b, (n,), generator=gen)
    y = torch.randint(h - size + 1, (n,), generator=gen)
    x = torch.randint(w - size + 1, (n,), generator=gen)
    return torch.stack([canvas[i[k], 0, y[k] : y[k] + size, x[k] : x[k] + size].flatten() for k in range(n)])


def any_size_claim(ctx: ClaimContext) -> ClaimOutcome:
    from thrifty.diffusion.sampling.any_size import AnySizeDiffusion, seam_energy

    steps_list, canvases, side = ANY_SIZE_SCALES[ctx.scale]
    field = StationaryField(side, length_scale=2.0)
    tile_den = field.tile_denoiser(ANY_SIZE_TILE)
    modes = ("fixed", "overlap", "fstd")
    advance = ctx.track("tiled generation (seeds x modes x steps)", len(ctx.seeds) * len(modes) * len(steps_list))
    seam = {m: Series(label=m, metric="seam energy") for m in modes}
    evals = {m: Series(label=m, metric="tile evaluations per canvas") for m in modes}
    patch = {m: Series(label=m, metric="patch SWD") for m in modes}
    per_seed: dict[str, list[float]] = {}
    real_seam = []
    details: dict[str, object] = {}
    for seed in ctx.seeds:
        gen = torch.Generator().manual_seed(seed)
        real = field.sample(canvases, gen)
        real_seam.append(seam_energy(real, ANY_SIZE_TILE))
        real_patches = _patches(field.sample(canvases, gen), 2000, torch.Generator().manual_seed(seed), ANY_SIZE_TILE)
        noise = torch.randn(canvases, 1, side, side, generator=gen)
        shown = {"real field": real}
        for m in modes:
            s_vals, e_vals, p_vals = [], [], []
            for k in steps_list:
                asd = AnySizeDiffusion(
                    tile_den, ANY_SIZE_TILE, m, ANY_SIZE_OVERLAP, ANY_SIZE_RESET, flat=True, seed=seed
                )
                out = asd.generate(noise, uniform_grid(k))
                s_vals.append(seam_energy(out, ANY_SIZE_TILE))
                e_vals.append(asd.tiled.tile_evaluations / canvases)
                p_vals.append(
                    sliced_wasserstein(
                        _patches(out, 2000, torch.Generator().manual_seed(seed + 1), ANY_SIZE_TILE),
                        real_patches,
                        128,
                        torch.Generator().manual_seed(seed + 2),
                    )
                )
                if k == steps_list[-1]:
                    shown[m] = out
                advance(1)
            seam[m].add(steps_list, [0.0] * len(steps_list), s_vals)
            evals[m].add(steps_list, [0.0] * len(steps_list), e_vals)
            patch[m].add(steps_list, [0.0] * len(steps_list), p_vals)
            per_seed[f"seam_{m}"] = per_seed.get(f"seam_{m}", []) + [_mean(s_vals)]
            per_seed[f"evals_{m}"] = per_seed.get(f"evals_{m}", []) + [_mean(e_vals)]
            per_seed[f"patch_swd_{m}"] = per_seed.get(f"patch_swd_{m}", []) + [_mean(p_vals)]
        if seed == ctx.seeds[0]:
            details["samples_png"] = _save_panels(
                ctx, "any_size_canvases", {k: v[:4] for k, v in shown.items()}, "images"
            )
    details["quality_vs_steps_png"] = _plot_vs_steps(
        ctx, "any_size_vs_steps", [*seam.values(), *evals.values(), *patch.values()]
    )
    # per step count, seed means
    seam_fixed = [_mean([v[j] for v in seam["fixed"].values]) for j in range(len(steps_list))]
    seam_fstd = [_mean([v[j] for v in seam["fstd"].values]) for j in range(len(steps_list))]
    evals_fstd = _mean(per_seed["evals_fstd"])
    evals_overlap = _mean(per_seed["evals_overlap"])
    lower_seams = all(f < x for f, x in zip(seam_fstd, seam_fixed, strict=True))
    fewer = evals_fstd < evals_overlap
    metrics = {key: _mean(v) for key, v in per_seed.items()}
    metrics["seam_real_field"] = _mean(real_seam)
    mt = metrics
    summary = (
        f"seam energy (mean over steps {steps_list}): fixed {mt['seam_fixed']:.3g}, overlap {mt['seam_overlap']:.3g}, "
        f"FSTD {mt['seam_fstd']:.3g} (real field {mt['seam_real_field']:.3g}); tile evaluations per canvas: fixed "
        f"{mt['evals_fixed']:.0f}, overlap {evals_overlap:.0f}, FSTD {evals_fstd:.0f}; patch SWD: fixed "
        f"{mt['patch_swd_fixed']:.3g}, overlap {mt['patch_swd_overlap']:.3g}, FSTD {mt['patch_swd_fstd']:.3g} (held if "
        "FSTD seams < fixed at every step count and FSTD evaluations < overlap)"
    )
    return ClaimOutcome(
        HELD if lower_seams and fewer else NOT_HELD,
        summary,
        metrics=metrics,
        per_seed=per_seed,
        series=[*seam.values(), *evals.values(), *patch.values()],
        details={
            **details,
            "workload": f"{canvases} canvases of {side}x{side} from a stationary Gaussian random field (squared-"
            f"exponential covariance, length scale 2), generated with the exact denoiser of one {ANY_SIZE_TILE}x"
            f"{ANY_SIZE_TILE} window (rectified-flow schedule, Euler); overlap {ANY_SIZE_OVERLAP} (stride "
            f"{ANY_SIZE_TILE - ANY_SIZE_OVERLAP}) with Gaussian blending; FSTD offsets in [0, {ANY_SIZE_OVERLAP}), "
            f"reset every {ANY_SIZE_RESET} steps",
            "seam_fixed_per_steps": seam_fixed,
            "seam_fstd_per_steps": seam_fstd,
            "checks": {"fstd_lower_seams_than_fixed": lower_seams, "fstd_fewer_evaluations_than_overlap": fewer},
            "note": "ARAD (aspect-ratio fine-tuning of a text-to-image model) is not measured; seam energy = excess "
            "neighbour difference at the strongest tile phase; patch SWD compares random 8x8 windows with the field's",
            "scale": "measured, CPU",
        },
    )


register(
    Claim(
        key="any_size",
        statement="we further introduce a technique called Fast Seamless Tiled Diffusion (FSTD) at the subsequent "
        "stage. This method allows for the rapid enlargement of the ASD output to any high-resolution size, avoiding "
        "seaming artifacts or memory overloads.",
        measures="seam energy and tile evaluations of canvases 4x the tile size generated by tiling an exact window "
        "denoiser of a stationary Gaussian field: fixed non-overlapping tiles, overlapping tiles with Gaussian "
        "blending, and FSTD (random offsets reset every 4 steps); patch SWD reported",
        threshold="FSTD seam energy < fixed tiles at every step count (seed means), and FSTD tile evaluations < "
        "overlapping tiles",
        run=any_size_claim,
        default=True,
    )
)
