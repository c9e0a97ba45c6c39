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
    argv = ["diffusion", "sample", "--grid", "boss", "--steps", "1,3", "--teacher", str(path), "--shape", "2"]
    assert main([*argv, "--reference", str(ref), "--samples", "200", "--out", str(out)]) == 0
    runs = json.loads((out / "summary.json").read_text())["runs"]
    assert [r["steps"] for r in runs] == [1, 3] and [r["nfe_per_sample"] for r in runs] == [1, 3]
    assert runs[1]["grid"][0] == 1.0 and len(runs[1]["grid"]) == 4 and runs[1]["SWD"] < runs[0]["SWD"]
    assert torch.load(out / "samples_K3.pt").shape == (200, 2) and (out / "samples_K3.png").exists()
    assert (out / "quality_vs_steps.png").exists()


def test_sample_reports_bad_input(teacher_file, tmp_path, capsys):
    path, _ = teacher_file
    base = ["diffusion", "sample", "--teacher", str(path), "--out", str(tmp_path / "o")]
    assert main([*base, "--shape", "2", "--steps", "0"]) == 2
    assert "--steps must be >= 1" in capsys.readouterr().err
    assert main([*base, "--shape", "2", "--steps", "two"]) == 2
    assert "comma-separated" in capsys.readouterr().err
    assert main(base) == 2
    assert "needs --shape" in capsys.readouterr().err
    assert main([*base, "--shape", "2", "--grid", "autodiffusion"]) == 2
    assert "--reference" in capsys.readouterr().err
    assert main(["diffusion", "sample", "--teacher", str(tmp_path / "missing.pt")]) == 2
    assert "existing file" in capsys.readouterr().err
