"""Claims of the trajectory-distillation papers: InstaFlow, SlimFlow, Hyper-SD, SCott and improved LCT.

Substrate: the 2-D eight-Gaussians mixture (modes on a circle of radius 2, std 0.1), whose samples are cheap and whose
quality is measured by the sliced Wasserstein distance (SWD, 256 projections) to fresh data samples. Teachers are
rectified flows (velocity-predicting ``TimeMLP``s) trained by ``thrifty.diffusion.core.teachers`` (the cached
``toy2d_teacher`` at quick/full scale, a tiny inline one at smoke scale), or the exact Gaussian-mixture denoiser.
Each claim plots quality against sampling steps (and training iterations where it matters) and, when the bench
is given an output folder, saves scatter plots of the samples as ``<key>_samples.png``.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch
from torch import Tensor

from thrifty.bench.claim import HELD, NOT_HELD, Claim, ClaimContext, ClaimOutcome, Series
from thrifty.bench.claims import register
from thrifty.diffusion.core.data import GaussianMixture, eight_gaussians
from thrifty.diffusion.core.denoiser import Denoiser, ModuleDenoiser
from thrifty.diffusion.core.metrics import count_params, sliced_wasserstein, straightness
from thrifty.diffusion.core.schedules import RectifiedFlowSchedule
from thrifty.diffusion.core.solvers import Stochastic, sample, uniform_grid
from thrifty.diffusion.core.teachers import TimeMLP, toy2d_teacher, train_flow_matching
from thrifty.diffusion.distill._core import consistency_sample, frozen_copy
from thrifty.diffusion.distill.hyper_sd import HyperSD
from thrifty.diffusion.distill.improved_lct import ImprovedLCT
from thrifty.diffusion.distill.instaflow import InstaFlow
from thrifty.diffusion.distill.scott import SCott
from thrifty.diffusion.distill.slimflow import SlimFlow

EVAL_SAMPLES = {"smoke": 256, "quick": 4000, "full": 10000}
SAMPLING_STEPS = (1, 2, 4, 8)
FIELD = "diffusion"


# ---------------------------------------------------------------------------------------------------- helpers


def _wins(method: list[float], baseline: list[float]) -> int:
    """Seeds on which the method's value is below the baseline's (a mean difference won on few seeds is noise)."""
    return sum(m < b for m, b in zip(method, baseline, strict=True))


def _flow(hidden: int, depth: int, seed: int) -> ModuleDenoiser:
    torch.manual_seed(seed)
    return ModuleDenoiser(TimeMLP(2, hidden, depth), "velocity", RectifiedFlowSchedule())


def _teacher(ctx: ClaimContext, seed: int = 0) -> Denoiser:
    """The 1-rectified-flow teacher: the cached core teacher, or a tiny inline one at smoke scale."""
    if ctx.scale != "smoke":
        return toy2d_teacher("eight_gaussians")
    gm = eight_gaussians()
    teacher = _flow(32, 2, seed)
    train_flow_matching(teacher.module, lambda n, g: gm.sample(n, g), 60, 256, 3e-3, seed=seed)
    return frozen_copy(teacher)


def _swd(x: Tensor, ref: Tensor, seed: int) -> float:
    return sliced_wasserstein(x, ref, 256, torch.Generator().manual_seed(10_000 + seed))


def _noise(n: int, seed: int) -> Tensor:
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(20_000 + seed))


def _reference(gm: GaussianMixture, n: int, seed: int) -> Tensor:
    return gm.sample(n, torch.Generator().manual_seed(30_000 + seed))


@torch.no_grad()
def _ode_swd(flow: Denoiser, z: Tensor, ref: Tensor, seed: int) -> tuple[list[float], list[float]]:
    values, seconds = [], []
    for k in SAMPLING_STEPS:
        start = time.perf_counter()
        x = sample(flow, z, uniform_grid(k), "euler")
        seconds.append(time.perf_counter() - start)
        values.append(_swd(x, ref, seed))
    return values, seconds


@torch.no_grad()
def _cm_swd(student: Denoiser, z: Tensor, ref: Tensor, seed: int) -> tuple[list[float], list[float]]:
    values, seconds = [], []
    for k in SAMPLING_STEPS:
        start = time.perf_counter()
        x = consistency_sample(student, z, k, gamma=1.0, generator=torch.Generator().manual_seed(40_000 + seed))
        seconds.append(time.perf_counter() - start)
        values.append(_swd(x, ref, seed))
    return values, seconds


def _save_scatter(ctx: ClaimContext, key: str, panels: dict[str, Tensor], lim: float = 3.5) -> str | None:
    """Scatter plots of 2-D samples, one panel each, as ``<out_dir>/<key>_samples.png`` (None without out_dir)."""
    if ctx.out_dir is None:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(3.0 * len(panels), 3.2), squeeze=False)
    for ax, (label, x) in zip(axes[0], panels.items(), strict=True):
        x = x.detach().cpu()
        ax.scatter(x[:, 0], x[:, 1], s=1, alpha=0.4)
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
        ax.set_title(label, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    path = Path(ctx.out_dir) / f"{key}_samples.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return str(path)


def _mean(values: list[float]) -> float:
    return statistics.fmean(values)


class _OneStepCurve:
    """An ``on_step`` callback: advances the progress bar and records the student's one-step SWD every ``every``
    calls (``steps`` counts calls, so it spans the stages of a multi-stage distiller)."""

    def __init__(self, student: Denoiser, z: Tensor, ref: Tensor, seed: int, every: int, advance) -> None:
        self.student, self.z, self.ref, self.seed, self.every, self.advance = student, z, ref, seed, every, advance
        self.calls = 0
        self.steps: list[float] = [0.0]
        self.values: list[float] = [self.swd()]

    def swd(self) -> float:
        with torch.no_grad():
            return _swd(self.student.predict(self.z, 1.0).x0, self.ref, self.seed)

    def __call__(self, step: int, loss: float) -> None:
        self.calls += 1
        self.advance(1)
        if self.calls % self.every == 0:
            self.steps.append(float(self.calls))
            self.values.append(self.swd())


# ---------------------------------------------------------------------------------------------------- InstaFlow

INSTAFLOW_SCALES = {  # pairs, reflow steps, distillation steps, eval every
    "smoke": (256, 10, 10, 5),
    "quick": (4000, 1000, 1000, 250),
    "full": (20000, 5000, 5000, 500),
}


def instaflow_claim(ctx: ClaimContext) -> ClaimOutcome:
    num_pairs, reflow_steps, distill_steps, every = INSTAFLOW_SCALES[ctx.scale]
    gm, n_eval = eight_gaussians(), EVAL_SAMPLES[ctx.scale]
    advance = ctx.track("reflow + 2 distillations", len(ctx.seeds) * (reflow_steps + 2 * distill_steps))
    per: dict[str, list[float]] = {k: [] for k in ("straight_1rf", "straight_2rf", "swd_from_1rf", "swd_from_2rf")}
    series = {name: Series(label=name, metric="SWD vs sampling steps") for name in ("1-RF Euler", "2-RF Euler")}
    curves = {name: Series(label=name, metric="one-step SWD vs distillation iterations") for name in ("1-RF", "2-RF")}
    panels: dict[str, Tensor] = {}
    for seed in ctx.seeds:
        teacher = _teacher(ctx, seed)
        insta = InstaFlow(teacher, (2,), ode_steps=16, generator=torch.Generator().manual_seed(seed))
        z, ref = _noise(n_eval, seed), _reference(gm, n_eval, seed)
        two_rf = insta.reflow(num_pairs, reflow_steps, on_step=lambda s, v: advance(1))
        grid = uniform_grid(16)
        with torch.no_grad():
            for name, flow in (("1rf", teacher), ("2rf", two_rf)):
                per[f"straight_{name}"].append(straightness(sample(flow, z, grid, return_trajectory=True)[1], grid))
        for name, flow in (("1-RF Euler", teacher), ("2-RF Euler", two_rf)):
            values, seconds = _ode_swd(flow, z, ref, seed)
            series[name].add(list(SAMPLING_STEPS), seconds, values)
        for name, flow in (("1-RF", teacher), ("2-RF", two_rf)):
            student = frozen_copy(flow).requires_grad_(True)
            curve = _OneStepCurve(student, z, ref, seed, every, advance)
            insta.distill(flow, num_pairs, distill_steps, student=student, on_step=curve)
            curves[name].add(curve.steps, curve.steps, curve.values)
            per[f"swd_from_{name[0]}rf"].append(curve.values[-1])
            if seed == ctx.seeds[0]:
                with torch.no_grad():
                    panels[f"one step from {name}"] = student.predict(z[:2000], 1.0).x0
        if seed == ctx.seeds[0]:
            with torch.no_grad():
                panels["1-RF, 1 Euler step"] = sample(teacher, z[:2000], uniform_grid(1))
                panels["2-RF, 1 Euler step"] = sample(two_rf, z[:2000], uniform_grid(1))
                panels["data"] = ref[:2000]
    swd1, swd2 = _mean(per["swd_from_1rf"]), _mean(per["swd_from_2rf"])
    straighter = all(b < a for a, b in zip(per["straight_1rf"], per["straight_2rf"], strict=True))
    verdict = HELD if swd2 < swd1 and straighter else NOT_HELD
    summary = (
        f"one-step SWD after {distill_steps} distillation iterations: from the 2-RF {swd2:.3f} vs from the 1-RF "
        f"{swd1:.3f} (mean over {len(ctx.seeds)} seeds, lower on {_wins(per['swd_from_2rf'], per['swd_from_1rf'])} of "
        f"them); straightness 1-RF {_mean(per['straight_1rf']):.3f} -> "
        f"2-RF {_mean(per['straight_2rf']):.3f} ({'lower on every seed' if straighter else 'not lower on every seed'})"
    )
    return ClaimOutcome(
        verdict,
        summary,
        metrics={
            "one_step_swd_distilled_from_2rf": swd2,
            "one_step_swd_distilled_from_1rf": swd1,
            "straightness_1rf": _mean(per["straight_1rf"]),
            "straightness_2rf": _mean(per["straight_2rf"]),
            **{
                f"swd_{k}step_{n.split()[0]}": _mean([v[i] for v in s.values])
                for n, s in series.items()
                for i, k in enumerate(SAMPLING_STEPS)
            },
        },
        per_seed=per,
        series=[*series.values(), *curves.values()],
        details={
            "substrate": "2-D eight Gaussians; SWD (256 projections) to fresh data samples",
            "teacher": "1-RF = the core's cached rectified-flow teacher (TimeMLP), smoke: tiny inline teacher",
            "pairs": f"{num_pairs} (z, ODE_teacher(z)) pairs per flow, Heun 16 steps",
            "reflow": f"2-RF initialised from the 1-RF, {reflow_steps} iterations, batch 256, Adam 1e-3",
            "distillation": f"student initialised from its flow, L2 (2-D: no LPIPS), {distill_steps} iterations, "
            "pairs of its own flow",
            "straightness": "E sum dt |dx/dt - chord|^2 on 16 Euler steps",
            "samples": _save_scatter(ctx, "instaflow", panels),
        },
    )


register(
    Claim(
        key="instaflow",
        statement="we find that the reflow procedure ... straightens the trajectories ... and refines the coupling "
        "between noises and images, which facilitates the distillation process with student models",
        measures="one-step SWD on 2-D eight Gaussians of a student distilled from the 2-rectified flow vs from the "
        "1-rectified flow (same iterations, same pairs count), and the measured straightness of both flows",
        threshold="mean SWD (distilled from 2-RF) < mean SWD (distilled from 1-RF) and straightness(2-RF) < "
        "straightness(1-RF) on every seed",
        run=instaflow_claim,
        default=False,
    )
)


# ---------------------------------------------------------------------------------------------------- SlimFlow

SLIMFLOW_SCALES = {  # pairs, reflow steps, distillation steps, student hidden
    "smoke": (256, 10, 10, 16),
    "quick": (4000, 2000, 1000, 64),
    "full": (20000, 10000, 5000, 64),
}


def slimflow_claim(ctx: ClaimContext) -> ClaimOutcome:
    num_pairs, reflow_steps, distill_steps, hidden = SLIMFLOW_SCALES[ctx.scale]
    gm, n_eval = eight_gaussians(), EVAL_SAMPLES[ctx.scale]
    advance = ctx.track("2 arms x (reflow + distillation)", len(ctx.seeds) * 2 * (reflow_steps + distill_steps))
    per: dict[str, list[float]] = {k: [] for k in ("slimflow", "plain", "rf2_annealed", "rf2_plain")}
    series = {name: Series(label=name, metric="SWD vs sampling steps") for name in ("annealed 2-RF", "plain 2-RF")}
    panels: dict[str, Tensor] = {}
    ratio = float("nan")
    for seed in ctx.seeds:
        teacher = _teacher(ctx, seed)
        slim = SlimFlow(teacher, (2,), ode_steps=16, generator=torch.Generator().manual_seed(seed))
        pairs = slim.pairs(teacher, num_pairs)
        z, ref = _noise(n_eval, seed), _reference(gm, n_eval, seed)
        for arm, plain in (("slimflow", False), ("plain", True)):
            student = _flow(hidden, 2, 1000 + seed)  # same fresh initialisation in both arms
            ratio = count_params(student) / count_params(teacher)
            slim.generator.manual_seed(seed)
            two_rf = slim.annealing_reflow(student, reflow_steps, pairs, plain=plain, on_step=lambda s, v: advance(1))
            two_rf = frozen_copy(two_rf)
            values, seconds = _ode_swd(two_rf, z, ref, seed)
            series["plain 2-RF" if plain else "annealed 2-RF"].add(list(SAMPLING_STEPS), seconds, values)
            per["rf2_plain" if plain else "rf2_annealed"].append(values[0])
            own_pairs = slim.pairs(two_rf, num_pairs)
            one = slim.distill(two_rf, distill_steps, own_pairs, plain=plain, on_step=lambda s, v: advance(1))
            with torch.no_grad():
                x = one.predict(z, 1.0).x0
            per[arm].append(_swd(x, ref, seed))
            if seed == ctx.seeds[0]:
                panels[f"{arm}: one step"] = x[:2000]
        if seed == ctx.seeds[0]:
            panels["data"] = ref[:2000]
    slim_swd, plain_swd = _mean(per["slimflow"]), _mean(per["plain"])
    verdict = HELD if slim_swd < plain_swd and ratio <= 0.25 else NOT_HELD
    summary = (
        f"one-step SWD of a student with {ratio:.1%} of the teacher's parameters: annealing reflow + flow-guided "
        f"distillation {slim_swd:.3f} vs plain reflow + plain distillation {plain_swd:.3f} (mean over "
        f"{len(ctx.seeds)} seeds, lower on {_wins(per['slimflow'], per['plain'])} of them); before distillation, "
        f"1-step SWD of the small 2-RF: annealed "
        f"{_mean(per['rf2_annealed']):.3f}, plain {_mean(per['rf2_plain']):.3f}"
    )
    return ClaimOutcome(
        verdict,
        summary,
        metrics={
            "one_step_swd_slimflow": slim_swd,
            "one_step_swd_plain": plain_swd,
            "one_step_swd_2rf_annealed": _mean(per["rf2_annealed"]),
            "one_step_swd_2rf_plain": _mean(per["rf2_plain"]),
            "student_param_ratio": ratio,
        },
        per_seed=per,
        series=list(series.values()),
        details={
            "substrate": "2-D eight Gaussians; SWD (256 projections) to fresh data samples",
            "teacher": "the core's cached 1-RF teacher (smoke: tiny inline teacher)",
            "student": f"TimeMLP 2-{hidden}x2 from scratch in both arms (same initialisation)",
            "reflow": f"{reflow_steps} iterations on {num_pairs} teacher pairs; annealing linear over the first half",
            "distillation": f"{distill_steps} iterations on pairs of each arm's own small 2-RF; flow guidance with "
            "t' ~ U[0.2, 0.8]; L2 (2-D: no LPIPS)",
            "samples": _save_scatter(ctx, "slimflow", panels),
        },
    )


register(
    Claim(
        key="slimflow",
        statement="we propose Annealing Reflow ... [and] Flow-Guided Distillation ... to train small, efficient "
        "one-step diffusion models",
        measures="one-step SWD on 2-D eight Gaussians of a student with at most a quarter of the teacher's "
        "parameters: annealing reflow + flow-guided distillation vs plain reflow + plain distillation, equal "
        "iterations",
        threshold="mean one-step SWD (SlimFlow) < mean one-step SWD (plain), student params <= 25% of the teacher's",
        run=slimflow_claim,
        default=False,
    )
)


# ---------------------------------------------------------------------------------------------------- Hyper-SD

HYPER_SD_SCALES = {"smoke": (8, 8), "quick": (1600, 16), "full": (8000, 48)}  # iterations, grid timesteps


def hyper_sd_claim(ctx: ClaimContext) -> ClaimOutcome:
    iterations, num_timesteps = HYPER_SD_SCALES[ctx.scale]
    gm, n_eval = eight_gaussians(), EVAL_SAMPLES[ctx.scale]
    advance = ctx.track("TSCD and plain CD", len(ctx.seeds) * 2 * iterations)
    arms = {"TSCD 8-4-2-1": (8, 4, 2, 1), "plain CD": (1,)}
    per: dict[str, list[float]] = {f"{a} {k}-step": [] for a in arms for k in SAMPLING_STEPS}
    series = [Series(label=a, metric="SWD vs sampling steps (TCD gamma 1)") for a in arms]
    curves = [Series(label=a, metric="one-step SWD vs training iterations") for a in arms]
    panels: dict[str, Tensor] = {}
    for seed in ctx.seeds:
        teacher = _teacher(ctx, seed)
        z, ref = _noise(n_eval, seed), _reference(gm, n_eval, seed)
        data = [gm.sample(256, torch.Generator().manual_seed(seed * 1000 + i)) for i in range(64)]
        for (arm, stages), s_series, c_series in zip(arms.items(), series, curves, strict=True):
            student = frozen_copy(teacher).requires_grad_(True)
            curve = _OneStepCurve(student, z, ref, seed, max(1, iterations // 8), advance)
            hyper = HyperSD(
                teacher, student, stages, num_timesteps=num_timesteps, generator=torch.Generator().manual_seed(seed)
            )
            hyper.fit(data, iterations, on_step=curve)
            c_series.add(curve.steps, curve.steps, curve.values)
            vals, seconds = _cm_swd(student, z, ref, seed)
            s_series.add(list(SAMPLING_STEPS), seconds, vals)
            for k, v in zip(SAMPLING_STEPS, vals, strict=True):
                per[f"{arm} {k}-step"].append(v)
            if seed == ctx.seeds[0]:
                with torch.no_grad():
                    for k in (1, 2):
                        panels[f"{arm}, {k} step"] = consistency_sample(student, z[:2000], k, gamma=1.0)
        if seed == ctx.seeds[0]:
            panels["data"] = ref[:2000]
    m = {k: _mean(v) for k, v in per.items()}
    wins = {k: m[f"TSCD 8-4-2-1 {k}-step"] < m[f"plain CD {k}-step"] for k in (1, 2)}
    verdict = HELD if all(wins.values()) else NOT_HELD
    summary = (
        f"SWD at equal iterations ({iterations}): TSCD 1-step {m['TSCD 8-4-2-1 1-step']:.3f} vs plain CD "
        f"{m['plain CD 1-step']:.3f}; 2-step {m['TSCD 8-4-2-1 2-step']:.3f} vs {m['plain CD 2-step']:.3f} (mean over "
        f"{len(ctx.seeds)} seeds, TCD gamma 1 sampling)"
    )
    return ClaimOutcome(
        verdict,
        summary,
        metrics={f"swd_{k.replace(' ', '_')}": v for k, v in m.items()},
        per_seed=per,
        series=series + curves,
        details={
            "substrate": "2-D eight Gaussians; SWD (256 projections) to fresh data samples",
            "teacher": "the core's cached 1-RF teacher (smoke: tiny inline teacher); students initialised from it",
            "distillation": f"consistency distillation on a {num_timesteps}-point uniform grid, DDIM teacher step, "
            "EMA target 0.95, MSE, batch 256; TSCD splits the iterations equally over stages 8, 4, 2, 1",
            "not reproduced": "adversarial loss, human-feedback and DMD stages of Hyper-SD",
            "samples": _save_scatter(ctx, "hyper_sd", panels),
        },
    )


register(
    Claim(
        key="hyper_sd",
        statement="we introduce Trajectory Segmented Consistency Distillation to progressively perform consistent "
        "distillation within pre-defined time-step segments, which facilitates the preservation of the original ODE "
        "trajectory",
        measures="SWD on 2-D eight Gaussians at 1 and 2 steps of segmented consistency distillation (8 -> 4 -> 2 -> 1) "
        "vs plain consistency distillation at equal training iterations",
        threshold="mean SWD (TSCD) < mean SWD (plain CD) at both 1 and 2 steps",
        run=hyper_sd_claim,
        default=False,
    )
)


# ---------------------------------------------------------------------------------------------------- SCott

SCOTT_SCALES = {  # iterations, imperfect-teacher steps, student hidden
    "smoke": (6, 20, 32),
    "quick": (800, 1500, 128),
    "full": (6000, 1500, 128),
}
SCOTT_ETA, SCOTT_SUB_STEPS, SCOTT_TIMESTEPS = 0.6, 4, 16
TIE_TOLERANCE = 0.10  # exact teacher: |SWD_sde - SWD_ode| <= 10% of SWD_ode counts as a tie


def scott_claim(ctx: ClaimContext) -> ClaimOutcome:
    iterations, teacher_steps, hidden = SCOTT_SCALES[ctx.scale]
    gm, n_eval = eight_gaussians(), EVAL_SAMPLES[ctx.scale]
    advance = ctx.track("4 students per seed", len(ctx.seeds) * 4 * iterations)
    keys = [f"{teacher} {solver}" for teacher in ("imperfect", "exact") for solver in ("ODE", "SDE")]
    per: dict[str, list[float]] = {f"{k} 2-step": [] for k in keys}
    per.update({f"{t} teacher, 32 {s} steps": [] for t in ("imperfect", "exact") for s in ("ODE", "SDE")})
    series = {k: Series(label=k, metric="SWD vs sampling steps") for k in keys}
    panels: dict[str, Tensor] = {}
    for seed in ctx.seeds:
        imperfect = _flow(32, 2, seed)
        train_flow_matching(imperfect.module, lambda n, g: gm.sample(n, g), teacher_steps, 256, 3e-3, seed=seed)
        teachers = {"imperfect": frozen_copy(imperfect), "exact": gm.denoiser(RectifiedFlowSchedule())}
        z, ref = _noise(n_eval, seed), _reference(gm, n_eval, seed)
        with torch.no_grad():  # context: does the teacher's own SDE sampling beat its ODE sampling?
            for name, teacher in teachers.items():
                for solver, step in (("ODE", "euler"), ("SDE", Stochastic(eta=SCOTT_ETA))):
                    x = sample(teacher, z, uniform_grid(32), step, generator=torch.Generator().manual_seed(seed))
                    per[f"{name} teacher, 32 {solver} steps"].append(_swd(x, ref, seed))
        data = [gm.sample(256, torch.Generator().manual_seed(seed * 1000 + i)) for i in range(64)]
        for name, teacher in teachers.items():
            for solver, eta in (("ODE", 0.0), ("SDE", SCOTT_ETA)):
                student = _flow(hidden, 3, 2000 + seed)  # same fresh initialisation for every arm
                scott = SCott(
                    student,
                    teacher,
                    eta=eta,
                    sub_steps=SCOTT_SUB_STEPS,
                    num_timesteps=SCOTT_TIMESTEPS,
                    generator=torch.Generator().manual_seed(seed),
                )
                scott.fit(data, iterations, on_step=lambda s, v: advance(1))
                vals, seconds = _cm_swd(student, z, ref, seed)
                series[f"{name} {solver}"].add(list(SAMPLING_STEPS), seconds, vals)
                per[f"{name} {solver} 2-step"].append(vals[1])
                if seed == ctx.seeds[0]:
                    with torch.no_grad():
                        panels[f"{name} teacher, {solver}: 2 steps"] = consistency_sample(student, z[:2000], 2)
        if seed == ctx.seeds[0]:
            with torch.no_grad():
                panels["imperfect teacher, 32 Euler steps"] = sample(teachers["imperfect"], z[:2000], uniform_grid(32))
            panels["data"] = ref[:2000]
    m = {k: _mean(v) for k, v in per.items()}
    better = m["imperfect SDE 2-step"] < m["imperfect ODE 2-step"]
    gap = abs(m["exact SDE 2-step"] - m["exact ODE 2-step"])
    tie = gap <= TIE_TOLERANCE * m["exact ODE 2-step"]
    summary = (
        f"2-step SWD with the imperfect teacher: SDE (eta {SCOTT_ETA}, {SCOTT_SUB_STEPS} sub-steps) "
        f"{m['imperfect SDE 2-step']:.3f} vs ODE {m['imperfect ODE 2-step']:.3f}; with the exact GMM teacher: SDE "
        f"{m['exact SDE 2-step']:.3f} vs ODE {m['exact ODE 2-step']:.3f} -> "
        f"{'a tie' if tie else 'not a tie'} (tolerance {TIE_TOLERANCE:.0%}); mean over {len(ctx.seeds)} seeds. "
        f"Teachers' own 32-step SWD, ODE / SDE: imperfect {m['imperfect teacher, 32 ODE steps']:.3f} / "
        f"{m['imperfect teacher, 32 SDE steps']:.3f}, exact {m['exact teacher, 32 ODE steps']:.3f} / "
        f"{m['exact teacher, 32 SDE steps']:.3f}"
    )
    return ClaimOutcome(
        HELD if better else NOT_HELD,
        summary,
        metrics={
            **{f"swd_{k.replace(' ', '_').replace(',', '')}": v for k, v in m.items()},
            "exact_teacher_tie": float(tie),
        },
        per_seed=per,
        series=list(series.values()),
        details={
            "substrate": "2-D eight Gaussians; SWD (256 projections) to fresh data samples",
            "imperfect teacher": f"TimeMLP 2-32x2 rectified flow trained only {teacher_steps} iterations (deliberately "
            "imperfect)",
            "exact teacher": "the mixture's analytic denoiser (GaussianMixtureDenoiser)",
            "distillation": f"consistency distillation, {SCOTT_TIMESTEPS}-point grid, teacher moves one interval in "
            f"{SCOTT_SUB_STEPS} sub-steps of DDIM-eta (eta 0 = ODE baseline), EMA target 0.95, MSE, "
            f"{iterations} iterations, students TimeMLP 2-{hidden}x3 from the same initialisation",
            "judged": "only the imperfect-teacher comparison; the exact-teacher tie is reported",
            "samples": _save_scatter(ctx, "scott", panels),
        },
    )


register(
    Claim(
        key="scott",
        statement="SCott ... integrates stochastic differential equation (SDE) solvers into consistency distillation "
        "to unleash the potential of the teacher model",
        measures="2-step SWD on 2-D eight Gaussians of consistency students distilled with a stochastic-solver "
        "teacher vs an ODE-solver teacher, for a deliberately imperfect teacher and (reported) for the exact teacher",
        threshold="imperfect teacher: mean 2-step SWD (SDE) < mean 2-step SWD (ODE); the exact-teacher result is "
        f"reported as a tie when the gap is within {TIE_TOLERANCE:.0%}",
        run=scott_claim,
        default=False,
    )
)


# ---------------------------------------------------------------------------------------------------- improved LCT

ILCT_SCALES = {"smoke": (10, 20), "quick": (2000, 80), "full": (10000, 320)}  # iterations, s1
OUTLIER_FRACTION, OUTLIER_DF, OUTLIER_SCALE, INLIER_RADIUS = 0.02, 1.5, 2.0, 4.0


def contaminated(gm: GaussianMixture, n: int, generator: torch.Generator) -> Tensor:
    """Mixture samples with ``OUTLIER_FRACTION`` replaced by Student-t(``OUTLIER_DF``) impulsive outliers
    (scale ``OUTLIER_SCALE``): heavy-tailed "latents" standing in for the VAE latents of the paper (injected)."""
    x = gm.sample(n, generator)
    mask = torch.rand(n, generator=generator) < OUTLIER_FRACTION
    normal = torch.randn(n, 2, generator=generator)
    chi2 = 2 * torch._standard_gamma(torch.full((n, 1), OUTLIER_DF / 2))  # torch's gamma takes no generator
    t = normal / torch.sqrt(chi2 / OUTLIER_DF)
    return torch.where(mask[:, None], OUTLIER_SCALE * t, x)


def _inlier_swd(x: Tensor, ref: Tensor, seed: int) -> float:
    return _swd(x[x.norm(dim=1) < INLIER_RADIUS], ref, seed)


def _metric_name(label: str) -> str:
    return label.replace(" (reported)", "").replace(" ", "_").replace("-", "_")


def improved_lct_claim(ctx: ClaimContext) -> ClaimOutcome:
    iterations, s1 = ILCT_SCALES[ctx.scale]
    gm, n_eval = eight_gaussians(), EVAL_SAMPLES[ctx.scale]
    # judged: the loss alone, everything else iCT's (c = 0.00054 sqrt(d), no diffusion loss, no OT); reported: the
    # paper's full recipe (Cauchy + early diffusion loss + OT coupling + adaptive c), added after the judged run
    plain = {"c": None, "diffusion_weight": 0.0, "ot": False}
    arms = {
        "pseudo-Huber": {"loss": "pseudo_huber", **plain},
        "Cauchy": {"loss": "cauchy", **plain},
        "full iLCT (reported)": {"loss": "cauchy", "c": "adaptive", "diffusion_weight": 1.0, "ot": True},
    }
    advance = ctx.track("consistency training, 3 arms", len(ctx.seeds) * len(arms) * iterations)
    per: dict[str, list[float]] = {f"{a} {k}-step": [] for a in arms for k in (1, 2)}
    series = {a: Series(label=a, metric="inlier SWD vs sampling steps") for a in arms}
    panels: dict[str, Tensor] = {}
    for seed in ctx.seeds:
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        data = [contaminated(gm, 256, gen) for _ in range(64)]
        z, ref = _noise(n_eval, seed), _reference(gm, n_eval, seed)
        for arm, options in arms.items():
            student = _flow(128, 3, 3000 + seed)
            lct = ImprovedLCT(student, iterations, s1=s1, generator=torch.Generator().manual_seed(seed), **options)
            lct.fit(data, iterations, on_step=lambda s, v: advance(1))
            values, seconds = [], []
            for k in SAMPLING_STEPS:
                start = time.perf_counter()
                x = consistency_sample(student, z, k, generator=torch.Generator().manual_seed(40_000 + seed))
                seconds.append(time.perf_counter() - start)
                values.append(_inlier_swd(x, ref, seed))
                if k in (1, 2):
                    per[f"{arm} {k}-step"].append(values[-1])
                    if seed == ctx.seeds[0]:
                        panels[f"{arm}, {k} step"] = x[:2000]
            series[arm].add(list(SAMPLING_STEPS), seconds, values)
        if seed == ctx.seeds[0]:
            panels["training data (2% outliers)"] = torch.cat(data)[:2000]
    m = {k: _mean(v) for k, v in per.items()}
    wins = all(m[f"Cauchy {k}-step"] < m[f"pseudo-Huber {k}-step"] for k in (1, 2))
    summary = (
        f"inlier SWD with {OUTLIER_FRACTION:.0%} Student-t({OUTLIER_DF}) outliers: Cauchy 1-step "
        f"{m['Cauchy 1-step']:.3f} vs pseudo-Huber {m['pseudo-Huber 1-step']:.3f}; 2-step {m['Cauchy 2-step']:.3f} vs "
        f"{m['pseudo-Huber 2-step']:.3f} (mean over {len(ctx.seeds)} seeds, both with iCT's c); reported: full iLCT "
        f"(Cauchy, adaptive c, early diffusion loss, OT) {m['full iLCT (reported) 1-step']:.3f} / "
        f"{m['full iLCT (reported) 2-step']:.3f}"
    )
    return ClaimOutcome(
        HELD if wins else NOT_HELD,
        summary,
        metrics={"inlier_swd_" + _metric_name(k): v for k, v in m.items()},
        per_seed=per,
        series=list(series.values()),
        details={
            "substrate": f"2-D eight Gaussians with {OUTLIER_FRACTION:.0%} injected Student-t(nu={OUTLIER_DF}) "
            f"outliers (scale {OUTLIER_SCALE}); inlier SWD = SWD of the samples within radius {INLIER_RADIUS} to "
            "clean mixture samples",
            "training": f"iCT consistency training (no teacher), {iterations} iterations, curriculum s0 10 -> s1 {s1}, "
            "lognormal levels, c = 0.00054 sqrt(d) for both judged losses; only the loss differs (the first rung of "
            "the paper's ablation ladder)",
            "full iLCT": "reported, not judged: Cauchy with adaptive c (median TD residual), diffusion loss on t <= "
            "0.2 (weight 1), minibatch OT coupling; added after the judged run showed the Cauchy loss with iCT's tiny "
            "c losing (its 1/r gradient then favours the smallest residuals, weighted up by 1/(sigma_{i+1}-sigma_i))",
            "students": "TimeMLP 2-128x3, same initialisation in every arm; sampling: consistency multistep (gamma 1)",
            "samples": _save_scatter(ctx, "improved_lct", panels, lim=6.0),
        },
    )


register(
    Claim(
        key="improved_lct",
        statement="latent data often contains highly impulsive outliers, which significantly degrade the performance "
        "of iCT in the latent space. To address this, we replace Pseudo-Huber losses with Cauchy losses",
        measures="1- and 2-step inlier SWD of consistency training on outlier-contaminated 2-D data with the Cauchy "
        "loss vs the pseudo-Huber loss (everything else equal)",
        threshold="mean inlier SWD (Cauchy) < mean inlier SWD (pseudo-Huber) at both 1 and 2 steps",
        run=improved_lct_claim,
        default=False,
    )
)
