"""Weights that travel: export to safetensors, load with robustlab.load_model and torch.hub."""

import json
import pickle
from pathlib import Path

import pytest
import torch

import robustlab
from robustlab.certify.evaluate import evaluate, split_images
from robustlab.cli import main
from robustlab.config import load_config
from robustlab.files import atomic_torch_save
from robustlab.nn.lipschitz import LipschitzLayer
from robustlab.nn.models import create_model
from robustlab.runs.checkpoint import WeightsError, architecture_record, load_model, load_run_model, save_safetensors

REPO = Path(__file__).resolve().parents[1]  # holds hubconf.py
CPL = ["model.name=lipconvnet-cpl", "model.kwargs={width: 16, depth: 1}", "train.epochs=1", "train.device=cpu"]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("weights") / "run"
    argv = [arg for o in CPL + ["train.batch_size=128"] for arg in ("--set", o)]
    assert main(["train", "--run-dir", str(run_dir), "--quiet", *argv]) == 0
    assert main(["certify", str(run_dir), "--quiet"]) == 0  # writes certify.json
    return run_dir


@pytest.mark.slow
def test_round_trip_through_safetensors_and_torch_hub(trained_run, tmp_path, monkeypatch):
    assert main(["export", str(trained_run), "--format", "safetensors", "--out", str(tmp_path / "m.safetensors")]) == 0
    reference, config = load_run_model(trained_run)
    images, labels, _, num_classes = split_images(config)
    x = torch.as_tensor(images[:50]).permute(0, 3, 1, 2).float() / 255

    loaded = robustlab.load_model(tmp_path / "m.safetensors")
    hub = torch.hub.load(str(REPO), "lipconvnet_cpl", weights=str(tmp_path / "m.safetensors"), source="local")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))  # the URL's download goes to the hub cache
    url = (tmp_path / "m.safetensors").as_uri()
    from_url = torch.hub.load(str(REPO), "lipconvnet_cpl", weights=url, source="local")
    with torch.no_grad():
        expected = reference(x)
        for model in (loaded, hub, from_url):
            assert not model.training
            assert torch.equal(model(x), expected)

    certified = json.loads((trained_run / "certify.json").read_text())
    again = evaluate(loaded, images, labels, config.eval.eps, 500, "cpu", num_classes)
    assert [point.cra for point in again.cra] == [e["cra"] for e in certified["cra"]]
    assert again.accuracy == certified["accuracy"]


@pytest.mark.slow
def test_the_plain_export_round_trips_too(trained_run, capsys):
    assert main(["export", str(trained_run), "--plain", "--json"]) == 0
    path = Path(json.loads(capsys.readouterr().out)["path"])
    assert path == trained_run / "model-plain.safetensors"
    reference, _ = load_run_model(trained_run)
    plain = load_model(path)
    assert not any(isinstance(m, LipschitzLayer) for m in plain.modules())
    x = torch.rand(20, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(plain(x), reference(x), atol=1e-5, rtol=1e-5)


def _mlp_file(path, version=2):
    model = create_model("lipmlp-aol", (1, 8, 8), 10, width=16, depth=1)
    config = load_config(None, ["model.name=lipmlp-aol", "model.kwargs={width: 16, depth: 1}"])
    record = {**architecture_record(model, config), "version": version}
    return model, save_safetensors(path, model, record)


def test_weights_of_another_model_or_version_are_refused_with_the_reason(tmp_path):
    _mlp_file(tmp_path / "mlp.safetensors")
    wrong = "holds weights of a 'lipmlp-aol' model, not of 'lipconvnet-cpl' \\(its torch.hub entry is 'lipmlp_aol'"
    with pytest.raises(WeightsError, match=wrong):
        torch.hub.load(str(REPO), "lipconvnet_cpl", weights=str(tmp_path / "mlp.safetensors"), source="local")
    _mlp_file(tmp_path / "v1.safetensors", version=1)
    with pytest.raises(WeightsError, match="since architecture version 2, MaxMin pairs adjacent channels"):
        load_model(tmp_path / "v1.safetensors")
    _mlp_file(tmp_path / "v9.safetensors", version=9)
    with pytest.raises(WeightsError, match="saved by a newer robustlab"):
        load_model(tmp_path / "v9.safetensors")


def test_a_model_round_trips_through_a_file_without_training(tmp_path):
    model, path = _mlp_file(tmp_path / "mlp.safetensors")
    x = torch.rand(4, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(load_model(path)(x), model.eval()(x))


def test_files_that_are_not_robustlab_weights_are_one_line_errors(tmp_path, capsys):
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, tmp_path / "bare.safetensors")
    with pytest.raises(WeightsError, match="without robustlab's architecture record"):
        load_model(tmp_path / "bare.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 40)
    with pytest.raises(WeightsError, match="not a readable safetensors file"):
        load_model(tmp_path / "junk.safetensors")
    with pytest.raises(WeightsError, match="does not exist"):
        load_model(tmp_path / "missing.safetensors")


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_loading_never_unpickles(tmp_path):
    marker = tmp_path / "code-ran"
    path = tmp_path / "model.pt"
    path.write_bytes(pickle.dumps({"architecture": {"name": "lipmlp-aol"}, "model": _Payload(marker)}, protocol=2))
    with pytest.raises(ValueError, match="cannot load checkpoint"):
        load_model(path)
    assert not marker.exists()
    atomic_torch_save({"not": "weights"}, tmp_path / "other.pt")
    with pytest.raises(WeightsError, match="not a robustlab weights file"):
        load_model(tmp_path / "other.pt")


def test_export_of_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert main(["export", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{tmp_path} is not a robustlab run directory" in err


def _trained_liresnet() -> tuple[torch.nn.Module, dict]:
    torch.manual_seed(0)
    model = create_model("liresnet", (1, 8, 8), 10, width=8, depth=2, features=16)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    for _ in range(5):  # grow the weights: the constant moves far from a new model's
        loss = -model(torch.rand(16, 1, 8, 8)).norm(dim=1).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    config = load_config(None, ["model.name=liresnet", "model.kwargs={width: 8, depth: 2, features: 16}"])
    return model.eval(), architecture_record(model, config)


@pytest.mark.parametrize("form", ["model", "plain"])
def test_a_loaded_liresnet_keeps_its_constants_and_its_certificates_hold(form, tmp_path):
    from robustlab.certify.attacks import check_soundness
    from robustlab.certify.evaluate import certify_points

    model, record = _trained_liresnet()
    loaded = load_model(save_safetensors(tmp_path / "m.safetensors", model, record, form))
    assert loaded.lipschitz_constant == model.lipschitz_constant  # from the weights, not a new skeleton's
    torch.testing.assert_close(loaded.margin_lipschitz(), model.margin_lipschitz(), rtol=0, atol=0)
    images = torch.rand(40, 1, 8, 8) * 0.2 + 0.4
    with torch.no_grad():
        labels = model(images).argmax(dim=1)  # every point correct: each has a radius to attack
    certificates = certify_points(loaded, images, labels)
    expected = certify_points(model, images, labels)
    # plain: the float64 copy runs the float32-rounded weights, within the rounding allowance
    torch.testing.assert_close(certificates.radii, expected.radii, rtol=0, atol=1e-12 if form == "model" else 1e-6)
    assert (certificates.radii > 0).sum() >= 10
    report = check_soundness(loaded, images, certificates, steps=50, restarts=2)
    assert report["sound"], report["counterexamples"][:3]


def test_plain_weights_that_are_not_the_export_of_their_source_are_refused(tmp_path):
    from safetensors.torch import load_file, save_file

    model, record = _trained_liresnet()
    path = save_safetensors(tmp_path / "m.safetensors", model, record, "plain")
    tensors = load_file(path)
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
    key = next(k for k in tensors if k.endswith("weight") and not k.startswith("source."))
    tensors[key] = tensors[key] * 1.5
    save_file(tensors, tmp_path / "edited.safetensors", metadata=metadata)
    with pytest.raises(WeightsError, match="not the export of the weights they came from"):
        load_model(tmp_path / "edited.safetensors")
    del metadata  # the source weights alone decide; an old plain file without them is refused
    old = {k: v for k, v in tensors.items() if not k.startswith("source.")}
    with safe_open(str(path), framework="pt") as handle:
        save_file(old, tmp_path / "old.safetensors", metadata=handle.metadata())
    with pytest.raises(WeightsError, match="without the weights it was exported from"):
        load_model(tmp_path / "old.safetensors")


def test_the_generic_hub_entry_loads_whatever_model_the_file_holds(tmp_path):
    model, path = _mlp_file(tmp_path / "mlp.safetensors")
    loaded = torch.hub.load(str(REPO), "load_weights", weights=str(path), source="local")
    x = torch.rand(4, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(loaded(x), model.eval()(x))


def test_run_store_is_importable_where_the_readme_shows_it(tmp_path):
    from robustlab.runs import RunStore

    assert RunStore(tmp_path / "runs").query() == []
    assert "from robustlab.runs import RunStore" in (REPO / "README.md").read_text()
