import json

import pytest
import torch
from cli_runner import run_cli
from safetensors.torch import load_file, save_file

from steering.errors import UserError
from steering.model.mixing import AdapterMetadata, AdapterSpec, read_bank_tensors, read_metadata
from steering.model.policy import BaseModelIdentity
from steering.objectives.calibration import fit_calibration, load_calibration
from steering.training.merge import merge_runs

SPEC = AdapterSpec(objectives=("positivity", "brevity"), rank=2, alpha=4.0)
LAYERS = ("model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.v_proj")
BASE = BaseModelIdentity("tiny-llama", "0" * 64)


def write_run(directory, seed, spec=SPEC, method="clp", base=BASE, calibration=(1.0, 2.0, 4.0)):
    """An adapter directory as training writes one: tensors, metadata and calibration."""
    generator = torch.Generator().manual_seed(seed)
    hidden = spec.num_adapters * spec.rank
    tensors = {}
    for layer in LAYERS:
        tensors[f"{layer}.A"] = torch.randn(hidden, 8, generator=generator)
        tensors[f"{layer}.B"] = torch.randn(6, hidden, generator=generator)
    directory.mkdir(parents=True)
    save_file(tensors, str(directory / "adapter.safetensors"))
    training = {"method": method, "objectives": list(spec.objectives), "seed": seed}
    metadata = AdapterMetadata(spec, base, training)
    (directory / "adapter.json").write_text(json.dumps(metadata.to_json()))
    fit_calibration({name: list(calibration) for name in spec.objectives}).save(directory)
    return tensors


def test_the_merge_is_the_elementwise_mean_of_the_runs(tmp_path):
    runs = [write_run(tmp_path / f"s{seed}", seed) for seed in range(3)]
    out = merge_runs([tmp_path / f"s{seed}" for seed in range(3)], tmp_path / "merged")
    merged = load_file(str(out / "adapter.safetensors"))
    assert merged.keys() == runs[0].keys()
    for name, tensor in merged.items():
        torch.testing.assert_close(tensor, sum(run[name] for run in runs) / 3)
    metadata = read_metadata(out)
    assert metadata.spec == SPEC and metadata.base_model == BASE
    assert metadata.training["method"] == "clp"
    assert metadata.training["merged"] == {
        "runs": [str(tmp_path / f"s{seed}") for seed in range(3)],
        "init": None,
        "scale": 1.0,
    }
    assert load_calibration(out).to_json() == load_calibration(tmp_path / "s0").to_json()
    assert set(read_bank_tensors(out, metadata)) == set(LAYERS)  # loads like a trained bank


def test_the_mean_update_is_scaled_from_the_start(tmp_path):
    # the start may name its objectives differently, as train --init-from allows
    start = write_run(tmp_path / "start", 10, spec=AdapterSpec(("a", "b"), rank=2, alpha=4.0))
    runs = [write_run(tmp_path / f"s{seed}", seed) for seed in range(2)]
    dirs = [tmp_path / "s0", tmp_path / "s1"]
    at_mean = load_file(
        str(merge_runs(dirs, tmp_path / "m1", tmp_path / "start") / "adapter.safetensors")
    )
    further = merge_runs(dirs, tmp_path / "m2", tmp_path / "start", scale=2.0)
    extrapolated = load_file(str(further / "adapter.safetensors"))
    for name in start:
        mean = (runs[0][name] + runs[1][name]) / 2
        torch.testing.assert_close(at_mean[name], mean)  # scale 1: the mean, whatever the start
        torch.testing.assert_close(extrapolated[name], start[name] + 2 * (mean - start[name]))
    assert read_metadata(further).training["merged"]["scale"] == 2.0
    assert read_metadata(further).training["merged"]["init"] == str(tmp_path / "start")


@pytest.mark.parametrize(
    "other,message",
    [
        (dict(spec=AdapterSpec(("positivity", "brevity"), rank=3, alpha=4.0)), "other adapters"),
        (dict(spec=AdapterSpec(("positivity", "relevance"), rank=2, alpha=4.0)), "other adapters"),
        (dict(method="soups"), "another method"),
        (dict(base=BaseModelIdentity("other", "1" * 64)), "trained on base model other"),
        (dict(calibration=(0.0, 5.0, 9.0)), "another calibration"),
    ],
)
def test_runs_of_another_recipe_are_refused(tmp_path, other, message):
    write_run(tmp_path / "s0", 0)
    write_run(tmp_path / "s1", 1, **other)
    with pytest.raises(UserError, match=message):
        merge_runs([tmp_path / "s0", tmp_path / "s1"], tmp_path / "merged")
    assert not (tmp_path / "merged").exists()  # nothing written


def test_bad_merges_are_refused(tmp_path):
    write_run(tmp_path / "s0", 0)
    write_run(tmp_path / "s1", 1)
    write_run(tmp_path / "start", 2, spec=AdapterSpec(("a", "b", "c"), rank=2, alpha=4.0))
    dirs = [tmp_path / "s0", tmp_path / "s1"]
    with pytest.raises(UserError, match="at least two runs"):
        merge_runs(dirs[:1], tmp_path / "merged")
    with pytest.raises(UserError, match="needs --init"):
        merge_runs(dirs, tmp_path / "merged", scale=1.5)
    for scale in (0.0, -1.0, float("nan")):
        with pytest.raises(UserError, match="positive number"):
            merge_runs(dirs, tmp_path / "merged", tmp_path / "start", scale)
    with pytest.raises(UserError, match="holds other adapters"):  # three objectives, not two
        merge_runs(dirs, tmp_path / "merged", tmp_path / "start")
    with pytest.raises(UserError, match="is one of the runs"):
        merge_runs(dirs, tmp_path / "s1")
    with pytest.raises(UserError, match="not an adapter directory"):
        merge_runs([tmp_path / "s0", tmp_path / "missing"], tmp_path / "merged")
    assert not (tmp_path / "merged").exists()
    assert load_file(str(tmp_path / "s1" / "adapter.safetensors"))  # the runs are untouched


def test_the_cli_merges_and_refuses_in_one_sentence(tmp_path):
    write_run(tmp_path / "s0", 0)
    write_run(tmp_path / "s1", 1)
    done = run_cli(
        "merge", str(tmp_path / "s0"), str(tmp_path / "s1"), "--out", str(tmp_path / "m")
    )
    assert done.returncode == 0, done.stderr
    assert f"merged adapter written to {tmp_path / 'm'}" in done.stdout
    refused = run_cli("merge", str(tmp_path / "s0"), "--out", str(tmp_path / "m2"))
    assert refused.returncode == 2
    assert refused.stderr.strip() == "error: give at least two runs to merge"
