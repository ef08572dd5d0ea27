"""The predictor: learning a known relation (held-out error falls below the constant
predictor's), held-out splits by whole layers or models, batched inference equal to unbatched,
save/load round trips, corrupt/truncated/incompatible files, unseen layer types, and
``sp.prune(..., "autosparse", predictor=...)``."""

import copy
import json
import os
import subprocess
import sys

import pytest
import torch

import sparsepai as sp
from sparsepai.autosparse import Predictor, PredictorConfig, train_predictor
from sparsepai.autosparse.predictor import build_net
from sparsepai.autosparse.training import _units, split_units
from tests.autosparse.helpers import SyntheticIRP, tiny_conv, tiny_data, tiny_model


def by_weight(wn, gn, rounds):
    # survival rises with the normalised |w|; the gradient is irrelevant
    return rounds * torch.sigmoid(3 * (wn.abs() - 1))


def by_grad(wn, gn, rounds):
    return rounds * torch.sigmoid(3 * (gn.abs() - 1))


@pytest.mark.parametrize("features,fn,norm", [(("param", "grad"), by_weight, "layer"),
                                              (("param", "grad"), by_weight, "model"),
                                              (("param",), by_weight, "model"),
                                              (("grad",), by_grad, "layer")])
def test_training_reduces_held_out_error(features, fn, norm):
    ds = SyntheticIRP(fn, types=("Linear", "Conv2d"), norm=norm)
    p = train_predictor([ds], features=features, epochs=25, batch_size=256, lr=3e-3,
                        normalization=norm, progress=False)
    h = p.history
    assert h["val_mse"][-1] < 0.3 * h["val_mse_constant"], h
    assert h["val_mse"][-1] < h["val_mse_initial"]
    assert len(h["train_mse"]) == len(h["val_mse"]) == 25


def test_a_feature_without_information_does_not_help():
    # survival depends on |w| only: a grad-only predictor cannot beat the constant by much
    ds = SyntheticIRP(by_weight, types=("Linear", "Conv2d"))
    p = train_predictor([ds], features=("grad",), epochs=10, batch_size=256, lr=3e-3,
                        normalization="layer", progress=False)
    assert p.history["val_mse"][-1] > 0.8 * p.history["val_mse_constant"]


def test_held_out_split_is_by_whole_layers_and_keeps_every_type():
    ds = SyntheticIRP(by_weight, layers=8, types=("Linear", "Conv2d"))
    cfg = PredictorConfig(holdout_fraction=0.3, seed=3)
    units = _units([ds], cfg.features)
    tr, va = split_units(units, 1, cfg)
    assert va and tr and not set(tr) & set(va)
    assert {units[i]["type"] for i in tr} == {"Linear", "Conv2d"}
    share = sum(len(units[i]["y"]) for i in va) / sum(len(u["y"]) for u in units)
    assert 0.1 < share < 0.5
    p = train_predictor([ds], epochs=1, progress=False, holdout_fraction=0.3, seed=3)
    assert [u[1] for u in p.history["split"]["val_units"]] == [units[i]["layer"] for i in va]


def test_held_out_split_by_model():
    a, b, c = (SyntheticIRP(by_weight, seed=s) for s in range(3))
    p = train_predictor([a, b, c], holdout="model", holdout_datasets=(1,), epochs=2,
                        progress=False)
    assert {u[0] for u in p.history["split"]["val_units"]} == {1}
    assert {u[0] for u in p.history["split"]["train_units"]} == {0, 2}
    with pytest.raises(ValueError, match="two or more"):
        train_predictor([a], holdout="model", epochs=1, progress=False)


def _untrained(backbone, **kw):
    torch.manual_seed(0)
    cfg = PredictorConfig(backbone=backbone, **kw)
    return Predictor(build_net(cfg), cfg, ("Linear",), {"note": "untrained"})


def test_batched_inference_equals_one_weight_at_a_time_mlp():
    p = _untrained("mlp")
    x = torch.randn(1000, 2)
    ref = torch.stack([p.net(x[i:i + 1])[0] for i in range(len(x))]).detach()  # autograd path
    for chunk in (1, 7, 256, 1 << 16):
        torch.testing.assert_close(p.predict(x, chunk_size=chunk), ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(p.predict(x, threads=2), ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backbone", ["resnet18", "vgg19"])
def test_batched_inference_equals_one_weight_at_a_time_image(backbone):
    p = _untrained(backbone)
    x = torch.randn(6, 2)
    single = torch.stack([p.predict(x[i:i + 1], chunk_size=1)[0] for i in range(len(x))])
    torch.testing.assert_close(p.predict(x, chunk_size=4), single, rtol=1e-4, atol=1e-5)
    assert p.net.lift[-1].out_features == 3 * 32 * 32


def test_save_load_round_trip(tmp_path):
    ds = SyntheticIRP(by_weight, types=("Linear", "Conv2d"))
    p = train_predictor([ds], epochs=2, progress=False)
    path = str(tmp_path / "p.safetensors")
    p.save(path)
    q = Predictor.load(path)
    x = torch.randn(500, 2)
    assert torch.equal(p.predict(x), q.predict(x))
    assert q.config == p.config and q.seen_layer_types == ("Conv2d", "Linear")
    assert q.history["val_mse"] == p.history["val_mse"]
    with open(path, "rb") as f:
        assert b"pickle" not in f.read(200)
    r = _untrained("resnet18", features=("grad",))
    r.save(path)
    r2 = Predictor.load(path)
    assert r2.features == ("grad",) and r2.config.backbone == "resnet18"
    assert torch.equal(r.predict(x[:3, :1]), r2.predict(x[:3, :1]))


def test_corrupt_truncated_and_incompatible_files(tmp_path):
    from safetensors.torch import save_file

    p = _untrained("mlp")
    good = str(tmp_path / "p.safetensors")
    p.save(good)
    data = open(good, "rb").read()
    cases = {"truncated": data[: len(data) - 40], "half": data[: len(data) // 2],
             "garbage": b"\x00" * 64, "empty": b""}
    for name, payload in cases.items():
        bad = tmp_path / f"{name}.safetensors"
        bad.write_bytes(payload)
        with pytest.raises(ValueError, match="corrupt or truncated"):
            Predictor.load(str(bad))
    with pytest.raises(FileNotFoundError):
        Predictor.load(str(tmp_path / "missing.safetensors"))
    # a valid safetensors file that is not a predictor
    other = str(tmp_path / "other.safetensors")
    save_file({"x": torch.ones(2)}, other)
    with pytest.raises(ValueError, match="not a sparsepai AutoSparse predictor"):
        Predictor.load(other)
    # another format version, and tensors that do not fit the config
    from safetensors import safe_open

    with safe_open(good, "pt") as f:
        meta = json.loads(f.metadata()["sparsepai"])
        state = {k: f.get_tensor(k) for k in f.keys()}
    for change, match in (({"format_version": 99}, "format version 99"),
                          ({"config": {**meta["config"], "hidden": 64}}, "do not fit")):
        path = str(tmp_path / "changed.safetensors")
        save_file(state, path, metadata={"sparsepai": json.dumps({**meta, **change})})
        with pytest.raises(ValueError, match=match):
            Predictor.load(path)
    assert open(good, "rb").read() == data  # nothing overwritten


def test_unseen_layer_types_error_or_documented_fallback():
    p = _untrained("mlp", features=("param",))  # trained on Linear only
    model = tiny_conv()
    with pytest.raises(ValueError, match="Conv2d.*unseen_layers='predict'"):
        p.score_model(model)
    with pytest.warns(RuntimeWarning, match="scoring them anyway"):
        s = p.score_model(model, unseen_layers="predict")
    assert set(s) == {"0.weight", "4.weight"}


def test_prune_with_autosparse(tmp_path):
    ds = SyntheticIRP(by_weight)
    p = train_predictor([ds], epochs=3, progress=False)
    path = str(tmp_path / "p.safetensors")
    p.save(path)
    model = tiny_model()
    before = copy.deepcopy(model.state_dict())
    data = [tuple(t) for t in zip(tiny_data().tensors[0].split(16),
                                  tiny_data().tensors[1].split(16))]
    masks = sp.prune(model, "autosparse", 0.75, data, predictor=p)
    total = sum(m.numel() for m in masks.values())
    assert sum(int(m.sum()) for m in masks.values()) == total - round(0.75 * total)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    # the same masks from the file, and the kept weights are the top predicted scores
    assert all(torch.equal(masks[k], v) for k, v in
               sp.prune(model, "autosparse", 0.75, data, predictor=path).items())
    scores = sp.score(model, "autosparse", data, predictor=p)
    flat = torch.cat([scores[k].reshape(-1) for k in scores])
    kept = torch.cat([masks[k].reshape(-1) for k in scores])
    assert flat[kept].min() >= flat[~kept].max()
    with pytest.raises(ValueError, match="needs predictor"):
        sp.prune(model, "autosparse", 0.5, data)
    with pytest.raises(ValueError, match="needs data"):
        sp.prune(model, "autosparse", 0.5, None, predictor=p)


def test_plot_and_lazy_matplotlib(tmp_path):
    from sparsepai.autosparse import plot_learned_function

    for feats in (("param", "grad"), ("grad",)):
        path = plot_learned_function(_untrained("mlp", features=feats),
                                     str(tmp_path / f"{len(feats)}.png"),
                                     SyntheticIRP(by_weight), grid=11)
        assert open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    code = ("import sys, sparsepai.autosparse, sparsepai.pruning.methods\n"
            "print('matplotlib' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


class _FanInIRP:
    """Duck-typed IRPDataset: layers of different fan-in whose weights look alike once normalised
    per layer, and whose survival depends on the fan-in (as IRP prunes wide layers harder)."""

    def __init__(self, seed, rounds=6):
        g = torch.Generator().manual_seed(seed)
        fans = (4, 16, 64, 256)
        self.names = [f"l{i}.weight" for i in range(len(fans))]
        self.rounds = rounds
        self.layer_types = {n: "Linear" for n in self.names}
        self.params, self.grads, self.survival = {}, {}, {}
        for n, fan in zip(self.names, fans):
            w = torch.randn(2048 // fan, fan, generator=g)
            self.params[n], self.grads[n] = w, torch.zeros_like(w)
            level = {4: 5, 16: 4, 64: 2, 256: 0}[fan]
            self.survival[n] = (level + (w.abs() > 1).int()).clamp(0, rounds).to(torch.int32)


def test_fanin_feature_lets_the_predictor_tell_layers_apart():
    data = [_FanInIRP(s) for s in range(3)]
    kw = dict(normalization="layer", holdout="model", holdout_datasets=(2,), epochs=20,
              batch_size=256, lr=3e-3, progress=False)
    plain = train_predictor(data, features=("param",), **kw).history
    fan = train_predictor(data, features=("param", "fanin"), **kw).history
    # without the fan-in, the best a per-weight predictor can do is the mixture over layers
    assert plain["val_mse"][-1] > 0.5 * plain["val_mse_constant"], plain["val_mse"]
    assert fan["val_mse"][-1] < 0.1 * fan["val_mse_constant"], fan["val_mse"]


def test_unknown_feature_and_default_features():
    assert PredictorConfig().features == ("param", "grad")
    with pytest.raises(ValueError, match="features"):
        PredictorConfig(features=("param", "depth"))


def test_a_predictor_with_non_finite_weights_fails_at_load(tmp_path):
    # the audit's corruption: the last 50 bytes set to 0xFF (NaN float32s); every AutoSparse
    # score was NaN and the masks were decided by position
    p = _untrained("mlp")
    path = tmp_path / "p.safetensors"
    p.save(str(path))
    data = bytearray(path.read_bytes())
    data[-50:] = b"\xff" * 50
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=f"{path}: corrupt predictor file: tensors .* hold NaN"):
        Predictor.load(str(path))
