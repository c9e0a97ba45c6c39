"""diffGrad against Adam on the digits CNN: final validation accuracy."""

from __future__ import annotations

from thrifty.bench.claim import Claim, ClaimContext, ClaimOutcome
from thrifty.bench.claims import register
from thrifty.bench.compare import compare
from thrifty.bench.experiment import RunSpec, default_device, run_method

DIGITS_CNN = {
    "smoke": ({"batch_size": 32}, 30, 10),
    "quick": ({"batch_size": 64}, 600, 50),
    "full": ({"batch_size": 64}, 3000, 100),
}
ACC_MARGIN = 0.005  # "outperforms": at least half a point of accuracy (about 2 of the 360 validation images)


def diffgrad_claim(ctx: ClaimContext) -> ClaimOutcome:
    config, steps, eval_every = DIGITS_CNN[ctx.scale]
    device = default_device(ctx.scale)
    adam = run_method(
        ctx, "Adam lr=1e-3", RunSpec.make("digits_cnn", config, "adam", {"lr": 1e-3}, steps, eval_every, device=device)
    )
    diff = run_method(
        ctx,
        "diffGrad lr=1e-3",
        RunSpec.make("digits_cnn", config, "diffgrad", {"lr": 1e-3}, steps, eval_every, device=device),
    )
    accuracy = compare(
        "final val accuracy, diffGrad - Adam",
        diff.finals("val_acc"),
        adam.finals("val_acc"),
        better="higher",
        margin=ACC_MARGIN,
    )
    loss = compare(
        "final val loss, diffGrad - Adam",
        diff.finals("val_loss"),
        adam.finals("val_loss"),
        better="lower",
        margin=0.0,
    )
    return ClaimOutcome.judged(
        f"diffGrad vs Adam after {steps} steps, both at the papers' default lr 1e-3",
        [accuracy],
        reported=[loss],
        metrics={
            "diffgrad_val_acc": diff.mean_final("val_acc"),
            "adam_val_acc": adam.mean_final("val_acc"),
            "acc_difference": accuracy.effect,
            "diffgrad_val_loss": diff.mean_final("val_loss"),
            "adam_val_loss": adam.mean_final("val_loss"),
        },
        per_seed={"adam_val_acc": adam.finals("val_acc"), "diffgrad_val_acc": diff.finals("val_acc")},
        series=[adam.series("val_acc"), diff.series("val_acc"), adam.series("val_loss"), diff.series("val_loss")],
        details={"workload": f"digits_cnn {config}, {steps} steps, both at the papers' default lr 1e-3"},
        failures=adam.failures + diff.failures,
    )


register(
    Claim(
        key="diffgrad",
        statement="The experiments show that diffGrad outperforms other optimizers.",
        measures="final validation accuracy of diffGrad and Adam (both lr 1e-3, paired by seed) training the small "
        "CNN on scikit-learn's digits",
        threshold=f"accuracy gain over Adam: 90% t-interval above +{ACC_MARGIN} (half a point)",
        run=diffgrad_claim,
    )
)
