"""The model zoo of ``bench_zoo.py``: which models, how each is built (random weights, nothing
downloaded) and what it is fed.

Three families:
  - ``tv``: every torchvision classifier with at most 150M parameters (counted on the meta
    device, so listing them is cheap);
  - ``timm``: a fixed list of architectures spread over timm's families (residual, SE/ECA
    gated, norm-act layers, dense concatenation, depthwise/inverted residual, same-padding,
    re-parameterisable, normaliser-free, hybrids and vision transformers, MLP mixers);
  - ``hf``: Hugging Face Llama (grouped-query attention), GPT-2 (``Conv1D`` layers), BERT and
    ViT, each from a small config.

Each entry is ``key -> Spec`` with ``build()`` returning ``(model, example_inputs, targets,
loss_fn)``. ``example_inputs`` is a tensor or a dict of keyword arguments, as ``sp.prune``
takes them.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

TV_MAX_PARAMS = 150e6

TIMM = """
resnet18 resnet18d resnet26t resnet50d seresnet18 seresnet50 resnext26ts ecaresnet26t skresnet18
res2net50_14w_8s resnest14d regnetx_002 regnety_002 densenet121 dpn48b cspresnet50 cspdarknet53
darknet53 dla34 hrnet_w18_small vovnet39a ese_vovnet19b_dw selecsls42b efficientnet_b0
tf_efficientnet_b0 efficientnet_lite0 efficientnetv2_rw_t mobilenetv2_050 mobilenetv3_small_050
mobilenetv3_large_100 mobilenetv4_conv_small mnasnet_050 semnasnet_050 lcnet_050 fbnetc_100
rexnet_100 ghostnet_100 hardcorenas_a tinynet_e mixnet_s repvgg_a0 repghostnet_050 mobileone_s0
nfnet_l0 dm_nfnet_f0 nf_resnet26 convnext_atto convnextv2_atto convnext_nano inception_v3
xception41 tresnet_m vgg11 vgg11_bn vit_tiny_patch16_224 deit_tiny_patch16_224
swin_tiny_patch4_window7_224 levit_128s pit_ti_224 cait_xxs24_224 coat_lite_tiny convit_tiny
crossvit_tiny_240 twins_svt_small mobilevit_xxs mobilevitv2_050 efficientformer_l1 poolformer_s12
mixer_s16_224 resmlp_12_224 gmlp_ti16_224 botnet26t_256 halonet26t lambda_resnet26t
coatnet_nano_rw_224 maxvit_nano_rw_256 edgenext_xx_small fastvit_t8 ghostnetv2_100
tiny_vit_5m_224 pvt_v2_b0 eva02_tiny_patch14_224 sequencer2d_s sebotnet33ts_256 visformer_tiny
xcit_nano_12_p16_224 hgnetv2_b0 rdnet_tiny
""".split()


@dataclasses.dataclass(frozen=True)
class Spec:
    family: str
    name: str
    build: Callable


def _image_batch(shape, classes=1000, batch=2, seed=0):
    import torch

    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, *shape, generator=g), torch.randint(0, classes, (batch,), generator=g)


def _ce(out, y):
    import torch.nn.functional as F

    return F.cross_entropy(out, y)


def _tv(name):
    def build():
        import torch
        import torchvision

        torch.manual_seed(0)
        kw = {"aux_logits": False, "init_weights": True} if name in ("googlenet",
                                                                     "inception_v3") else {}
        model = torchvision.models.get_model(name, weights=None, **kw)
        size = 299 if name == "inception_v3" else 224
        x, y = _image_batch((3, size, size))
        return model, x, y, _ce
    return build


def tv_names() -> list:
    """torchvision classifiers with at most ``TV_MAX_PARAMS`` parameters."""
    import torch
    import torchvision

    out = []
    for name in sorted(torchvision.models.list_models(module=torchvision.models)):
        kw = {"aux_logits": False, "init_weights": False} if name in (
            "googlenet", "inception_v3") else {}
        try:
            with torch.device("meta"):
                m = torchvision.models.get_model(name, weights=None, **kw)
        except NotImplementedError:  # RegNet's builder reads a tensor's values (.tolist())
            m = torchvision.models.get_model(name, weights=None, **kw)
        if sum(p.numel() for p in m.parameters()) <= TV_MAX_PARAMS:
            out.append(name)
    return out


def _timm(name):
    def build():
        import timm
        import torch

        torch.manual_seed(0)
        model = timm.create_model(name, pretrained=False)
        if not model.num_classes:  # a backbone config (eva02_tiny's has no head): give it one
            model = timm.create_model(name, pretrained=False, num_classes=1000)
        shape = tuple(model.pretrained_cfg.get("input_size", (3, 224, 224)))
        x, y = _image_batch(shape, classes=model.num_classes)
        return model, x, y, _ce
    return build


VOCAB, SEQ = 256, 16


def _tokens(classes):
    import torch

    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, VOCAB, (2, SEQ), generator=g)
    return ids, torch.randint(0, classes, (2,), generator=g)


def _lm_loss(out, y):
    import torch.nn.functional as F

    return F.cross_entropy(out.flatten(0, -2), y.flatten())


def _hf(name):
    def build():
        import torch
        import transformers as tr

        torch.manual_seed(0)
        if name in ("llama", "gpt2"):
            if name == "llama":
                cfg = tr.LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128,
                                     num_hidden_layers=2, num_attention_heads=4,
                                     num_key_value_heads=2, max_position_embeddings=64)
                model = tr.LlamaForCausalLM(cfg)
            else:
                cfg = tr.GPT2Config(vocab_size=VOCAB, n_embd=64, n_layer=2, n_head=4,
                                    n_positions=64)
                model = tr.GPT2LMHeadModel(cfg)
            ids, _ = _tokens(2)
            return model, {"input_ids": ids}, torch.roll(ids, -1, 1), _lm_loss
        if name == "bert":
            cfg = tr.BertConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128,
                                num_hidden_layers=2, num_attention_heads=4, num_labels=5,
                                max_position_embeddings=64)
            model = tr.BertForSequenceClassification(cfg)
            ids, y = _tokens(5)
            return model, {"input_ids": ids, "attention_mask": torch.ones_like(ids)}, y, _ce
        cfg = tr.ViTConfig(image_size=32, patch_size=8, hidden_size=64, intermediate_size=128,
                           num_hidden_layers=2, num_attention_heads=4, num_labels=10)
        model = tr.ViTForImageClassification(cfg)
        x, y = _image_batch((3, 32, 32), classes=10)
        return model, {"pixel_values": x}, y, _ce
    return build


HF = ("llama", "gpt2", "bert", "vit")


def catalogue(families=("tv", "timm", "hf")) -> dict:
    """``{"family:name": Spec}`` for the requested families, in a stable order."""
    out = {}
    if "tv" in families:
        for n in tv_names():
            out[f"tv:{n}"] = Spec("tv", n, _tv(n))
    if "timm" in families:
        for n in dict.fromkeys(TIMM):
            out[f"timm:{n}"] = Spec("timm", n, _timm(n))
    if "hf" in families:
        for n in HF:
            out[f"hf:{n}"] = Spec("hf", n, _hf(n))
    return out
