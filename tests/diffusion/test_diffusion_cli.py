import json

import pytest
import torch

from thrifty.cli import main
from thrifty.diffusion.core.data import eight_gaussians


@pytest.fixture()
def teacher_file(tmp_path):
    path = tmp_path / "gmm.pt"
    torch.save(eight_gaussians().denoiser(), path)
    ref = tmp_path / "ref.pt"
    torch.save(eight_gaussians().sample(500, torch.Generator().manual_seed(0)), ref)
    return path, ref


def test_sample_with_a_teacher_file_on_the_boss_grid(teacher_file, tmp_path, capsys):
    path, ref = teacher_file
    out = tmp_path / "out"
    argv = ["diffusion", "sample", "--grid", "boss", "--steps", "3", "--teacher", str(path), "--shape", "2"]
    assert main([*argv, "--reference", str(ref), "--samples", "200", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["nfe_per_sample"] == 3 and len(summary["grid"]) == 4 and summary["grid"][0] == 1.0
    assert summary["SWD"] < 1.0
    assert torch.load(out / "samples.pt").shape == (200, 2) and (out / "samples.png").exists()


def test_sample_reports_bad_input(teacher_file, tmp_path, capsys):
    path, _ = teacher_file
    base = ["diffusion", "sample", "--teacher", str(path), "--out", str(tmp_path / "o")]
    assert main([*base, "--shape", "2", "--steps", "0"]) == 2
    assert "--steps must be >= 1" in capsys.readouterr().err
    assert main(base) == 2
    assert "needs --shape" in capsys.readouterr().err
    assert main([*base, "--shape", "2", "--grid", "autodiffusion"]) == 2
    assert "--reference" in capsys.readouterr().err
    assert main(["diffusion", "sample", "--teacher", str(tmp_path / "missing.pt")]) == 2
    assert "existing file" in capsys.readouterr().err
