import json

import pytest

from thrifty.bench import speed
from thrifty.bench.speed import measure_speed, parse_spec
from thrifty.cli import main


def test_parse_spec():
    assert parse_spec("adamw:fused") == ("adamw", {"fused": True})
    assert parse_spec("soap") == ("soap", {})
    assert parse_spec("adamw8bit:reference") == ("adamw8bit", {"fused": False})
    with pytest.raises(ValueError, match="variant"):
        parse_spec("soap:turbo")


def test_measure_speed_reports_ratios_and_state_bytes():
    results = {r.spec: r for r in measure_speed(["sgd_sai", "soap"], model="mlp50k", rounds=2)}
    assert set(results) == {"adamw:fused", "adamw:foreach", "sgd_sai", "soap"}
    assert results["adamw:fused"].ratio_vs["adamw:fused"] == 1.0
    # SGD-SaI keeps one buffer per parameter, AdamW two plus a step counter per tensor
    assert results["sgd_sai"].state_ratio_vs_adamw == pytest.approx(0.5, abs=0.01)
    assert results["sgd_sai"].state_bytes_per_param == pytest.approx(4.0, abs=0.01)
    assert results["soap"].state_bytes > results["adamw:fused"].state_bytes
    assert all(r.median_ms > 0 and r.first_step_ms > 0 for r in results.values())


def test_speed_cli(tmp_path, capsys):
    assert main(["speed", "diffgrad:single", "--model", "mlp50k", "--rounds", "2", "--out", str(tmp_path)]) == 0
    record = json.loads((tmp_path / "speed.json").read_text())
    assert [r["spec"] for r in record["results"]] == ["adamw:fused", "adamw:foreach", "diffgrad:single"]
    assert main(["speed", "nope"]) == 2
    assert "valid names" in capsys.readouterr().err


def test_peer_optimizers_are_timed_when_installed(monkeypatch):
    with pytest.raises(ValueError, match="takes no variant"):
        parse_spec("bnb.adamw8bit:fused")
    monkeypatch.setitem(speed.PEERS, "nolib.adam", ("no_such_library.optim", "Adam", {}))
    with pytest.raises(ValueError, match="needs no_such_library installed"):
        parse_spec("nolib.adam")
    pytest.importorskip("bitsandbytes")
    results = {r.spec: r for r in measure_speed(["bnb.adamw8bit"], model="mlp50k", rounds=1)}
    assert results["bnb.adamw8bit"].state_ratio_vs_adamw < 0.5 and results["bnb.adamw8bit"].median_ms > 0


def test_charlm_model_uses_true_gradients():
    results = {r.spec: r for r in measure_speed(["sgd_sai:single"], model="charlm", rounds=1)}
    assert results["sgd_sai:single"].state_ratio_vs_adamw < 0.51
    with pytest.raises(ValueError, match="valid models"):
        measure_speed(["soap"], model="resnet")
