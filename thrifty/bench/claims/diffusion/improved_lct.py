"""Improved LCT on outlier-contaminated 2-D data: consistency training with the Cauchy loss against pseudo-Huber."""

from __future__ import annotations

import torch
from torch import Tensor

from thrifty.bench.claim import Claim, ClaimContext, ClaimOutcome, Series
from thrifty.bench.claims import register
from thrifty.bench.claims.diffusion.figures import save_panels
from thrifty.bench.claims.diffusion.toys import EVAL_SAMPLES, SAMPLING_STEPS, cm_swd, flow, noise, reference, swd
from thrifty.bench.compare import Comparison, compare
from thrifty.diffusion.core.data import GaussianMixture, eight_gaussians
from thrifty.diffusion.distill import ImprovedLCT, consistency_sample

SCALES = {"smoke": (10, 20), "quick": (2000, 80), "full": (10000, 320)}  # iterations, s1
OUTLIER_FRACTION, OUTLIER_DF, OUTLIER_SCALE, INLIER_RADIUS = 0.02, 1.5, 2.0, 4.0  # the card's 2% Student-t(1.5)
JUDGED_STEPS = (1, 2)  # the paper's one- and two-step regime
SWD_MARGIN = 0.05  # "significantly degrade ... we replace Pseudo-Huber losses with Cauchy": at least 5% lower SWD
# judged: the loss alone, everything else iCT's (c = 0.00054 sqrt(d), no diffusion loss, no OT); reported: the paper's
# full recipe (Cauchy + early diffusion loss + OT coupling + adaptive c), added after the first judged run
PLAIN = {"c": None, "diffusion_weight": 0.0, "ot": False}
ARMS = {
    "pseudo-Huber": {"loss": "pseudo_huber", **PLAIN},
    "Cauchy": {"loss": "cauchy", **PLAIN},
    "full iLCT (reported)": {"loss": "cauchy", "c": "adaptive", "diffusion_weight": 1.0, "ot": True},
}


def contaminated(gm: GaussianMixture, n: int, generator: torch.Generator) -> Tensor:
    """Mixture samples with ``OUTLIER_FRACTION`` replaced by Student-t(``OUTLIER_DF``) impulsive outliers
    (scale ``OUTLIER_SCALE``): heavy-tailed "latents" standing in for the VAE latents of the paper (injected)."""
    x = gm.sample(n, generator)
    mask = torch.rand(n, generator=generator) < OUTLIER_FRACTION
    normal = torch.randn(n, 2, generator=generator)
    chi2 = 2 * torch._standard_gamma(torch.full((n, 1), OUTLIER_DF / 2))  # torch's gamma takes no generator
    t = normal / torch.sqrt(chi2 / OUTLIER_DF)
    return torch.where(mask[:, None], OUTLIER_SCALE * t, x)


def _metric_name(label: str) -> str:
    return label.replace(" (reported)", "").replace(" ", "_").replace("-", "_")


def improved_lct_claim(ctx: ClaimContext) -> ClaimOutcome:
    iterations, s1 = SCALES[ctx.scale]
    gm, n_eval = eight_gaussians(), EVAL_SAMPLES[ctx.scale]
    advance = ctx.track("consistency training, 3 arms", len(ctx.seeds) * len(ARMS) * iterations)
    per: dict[str, list[float]] = {f"{a} {k}-step": [] for a in ARMS for k in JUDGED_STEPS}
    series = {a: Series(label=a, metric="inlier SWD vs sampling steps") for a in ARMS}
    panels: dict[str, Tensor] = {}
    for seed in ctx.seeds:
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        data = [contaminated(gm, 256, gen) for _ in range(64)]
        z, ref = noise(n_eval, seed), reference(gm, n_eval, seed)

        def inlier_swd(x: Tensor, ref: Tensor = ref, seed: int = seed) -> float:
            return swd(x[x.norm(dim=1) < INLIER_RADIUS], ref, seed)

        for arm, options in ARMS.items():
            student = flow(128, 3, 3000 + seed)  # same fresh initialisation in every arm
            lct = ImprovedLCT(
                student, total_steps=iterations, s1=s1, generator=torch.Generator().manual_seed(seed), **options
            )
            lct.fit(data, iterations, on_step=lambda s, v: advance(1))
            values, seconds = cm_swd(student, z, ref, seed, score=inlier_swd)
            series[arm].add(list(SAMPLING_STEPS), seconds, values)
            for k in JUDGED_STEPS:
                per[f"{arm} {k}-step"].append(values[SAMPLING_STEPS.index(k)])
                if seed == ctx.seeds[0]:
                    panels[f"{arm}, {k} step"] = consistency_sample(student, z[:2000], k)
        if seed == ctx.seeds[0]:
            panels["training data (2% outliers)"] = torch.cat(data)[:2000]

    def versus(arm: str, k: int) -> Comparison:
        return compare(
            f"{k}-step inlier SWD, {arm.replace(' (reported)', '')} vs pseudo-Huber",
            per[f"{arm} {k}-step"],
            per[f"pseudo-Huber {k}-step"],
            better="lower",
            margin=SWD_MARGIN,
            relative=True,
        )

    judged = [versus("Cauchy", k) for k in JUDGED_STEPS]
    reported = [versus("full iLCT (reported)", k) for k in JUDGED_STEPS]
    m = {k: sum(v) / len(v) for k, v in per.items()}
    return ClaimOutcome.judged(
        f"inlier SWD with {OUTLIER_FRACTION:.0%} Student-t({OUTLIER_DF}) outliers, Cauchy vs pseudo-Huber (both with "
        "iCT's c): "
        + "; ".join(
            f"{k}-step {c.method_mean:.3f} vs {c.baseline_mean:.3f}" for k, c in zip(JUDGED_STEPS, judged, strict=True)
        )
        + f" (paired by seed, {len(ctx.seeds)} seeds); reported: full iLCT (Cauchy, adaptive c, early diffusion loss, "
        f"OT) {m['full iLCT (reported) 1-step']:.3f} / {m['full iLCT (reported) 2-step']:.3f}",
        judged,
        reported=reported,
        metrics={"inlier_swd_" + _metric_name(k): v for k, v in m.items()},
        per_seed=per,
        series=list(series.values()),
        details={
            "substrate": f"2-D eight Gaussians with {OUTLIER_FRACTION:.0%} injected Student-t(nu={OUTLIER_DF}) "
            f"outliers (scale {OUTLIER_SCALE}); inlier SWD = SWD of the samples within radius {INLIER_RADIUS} to "
            "clean mixture samples; noise and data drawn per judged seed and shared by every arm",
            "training": f"iCT consistency training (no teacher), {iterations} iterations, curriculum s0 10 -> s1 {s1}, "
            "lognormal levels, c = 0.00054 sqrt(d) for both judged losses, Adam 1e-3 (the library's default); only "
            "the loss differs (the first rung of the paper's ablation ladder)",
            "full iLCT": "reported, not judged: Cauchy with adaptive c (median TD residual), diffusion loss on t <= "
            "0.2 (weight 1), minibatch OT coupling; added after the first judged run showed the Cauchy loss with "
            "iCT's tiny c losing (its 1/r gradient then favours the smallest residuals, weighted up by "
            "1/(sigma_{i+1}-sigma_i))",
            "students": "TimeMLP 2-128x3, same initialisation in every arm; sampling: consistency multistep (gamma 1)",
            "samples": save_panels(ctx, "improved_lct_samples", panels, lim=6.0),
        },
    )


register(
    Claim(
        key="improved_lct",
        statement="latent data often contains highly impulsive outliers, which significantly degrade the performance "
        "of iCT in the latent space. To address this, we replace Pseudo-Huber losses with Cauchy losses",
        measures="1- and 2-step inlier SWD of consistency training on outlier-contaminated 2-D data with the Cauchy "
        "loss vs the pseudo-Huber loss (everything else equal, same initialisation, paired by seed); the paper's "
        "full recipe reported against pseudo-Huber",
        threshold=f"relative inlier-SWD change (Cauchy vs pseudo-Huber), 90% t-interval over seeds below "
        f"-{SWD_MARGIN:.0%} at both 1 and 2 steps",
        run=improved_lct_claim,
        default=False,
    )
)
