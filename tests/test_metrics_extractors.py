"""Each metric network on random weights written to a file by the test, loaded through its loader.

Fixed architectures (I3D, Inception-v3) run once or twice at their protocol size; their other
checks use small inputs. Random weights use a He initialisation so that features depend on the input.
"""
import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from medsora.metrics.fvd import I3DFeatures
from medsora.metrics.i3d import InceptionI3d, load_i3d


def he_init_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random weights whose activations neither vanish nor explode (default inits shrink them)."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Conv3d, nn.Linear)):
            fan_in = m.weight[0].numel()
            with torch.no_grad():
                m.weight.normal_(0, math.sqrt(2 / fan_in), generator=g)
                if m.bias is not None:
                    m.bias.zero_()
    return model.eval()


def _videos(n, t=16, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, t, size, size, 3), generator=g, dtype=torch.uint8)


# ----------------------------------------------------------------------------------------------
# I3D

# (key, shape) of piergiaj/pytorch-i3d's InceptionI3d state dict (its pytorch_i3d.py), spot checks
PIERGIAJ_KEYS = {
    "Conv3d_1a_7x7.conv3d.weight": (64, 3, 7, 7, 7),
    "Conv3d_1a_7x7.bn.running_var": (64,),
    "Conv3d_2c_3x3.conv3d.weight": (192, 64, 3, 3, 3),
    "Mixed_3b.b1b.conv3d.weight": (128, 96, 3, 3, 3),
    "Mixed_4f.b3b.conv3d.weight": (128, 528, 1, 1, 1),
    "Mixed_5c.b0.bn.num_batches_tracked": (),
    "logits.conv3d.weight": (400, 1024, 1, 1, 1),
    "logits.conv3d.bias": (400,),
}


def test_i3d_state_dict_layout():
    sd = InceptionI3d().state_dict()
    for k, shape in PIERGIAJ_KEYS.items():
        assert tuple(sd[k].shape) == shape, k
    assert not any("logits.bn" in k for k in sd)
    # 12,697,264 parameters: the count of piergiaj's InceptionI3d(400)
    assert sum(p.numel() for p in InceptionI3d().parameters()) == 12_697_264


def test_i3d_network_deterministic_small_input():
    torch.manual_seed(0)
    net = he_init_(InceptionI3d())
    x = torch.rand(1, 3, 16, 32, 32) * 2 - 1
    with torch.no_grad():
        a, b = net.features(x), net.features(x)
    assert a.shape == (1, 1024, 2, 1, 1) and torch.equal(a, b)


@pytest.mark.parametrize("name, eps", [("rgb_imagenet.pt", 1e-3), ("i3d_pretrained_400.pt", 1e-5)])
def test_i3d_loads_state_dict_file(tmp_path, name, eps):
    torch.manual_seed(0)
    ref = he_init_(InceptionI3d())
    for m in ref.modules():  # non-trivial BatchNorm statistics, so a wrong load would show
        if isinstance(m, nn.BatchNorm3d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 2)
    torch.save(ref.state_dict(), tmp_path / name)
    net = load_i3d(tmp_path / name)
    assert isinstance(net, InceptionI3d) and not net.training
    assert net.Mixed_4b.b0.bn.eps == eps  # each published file with its own code's BatchNorm epsilon
    for k, v in ref.state_dict().items():
        assert torch.equal(net.state_dict()[k], v), k


def test_i3d_features_end_to_end(tmp_path):
    """The FVD protocol path at 224 px: (b, 16, h, w, 3) uint8 → (b, 400); batch invariance; determinism."""
    torch.manual_seed(0)
    torch.save(he_init_(InceptionI3d()).state_dict(), tmp_path / "rgb_imagenet.pt")
    feats = I3DFeatures(load_i3d(tmp_path / "rgb_imagenet.pt"))
    v = _videos(2)
    both = feats(v)
    one = feats(v[:1])
    assert both.shape == (2, 400) and both.dtype == torch.float32
    torch.testing.assert_close(one[0], both[0], rtol=1e-4, atol=1e-4 * both.abs().max().item())
    assert (both[0] - both[1]).abs().max() > 1e-2 * both.abs().max()  # features depend on the input


class _FakeScriptedI3D(nn.Module):
    """Same call signature as StyleGAN-V's i3d_torchscript.pt; returns a checkable function of the input."""

    def forward(self, x: torch.Tensor, rescale: bool = False, resize: bool = False, return_features: bool = False):
        assert x.dtype == torch.uint8 and x.shape[1] == 3  # (b, 3, t, h, w) uint8
        y = x.float()
        if rescale:
            y = y / 127.5 - 1
        flags = torch.tensor([float(resize), float(return_features)]).expand(x.shape[0], 2)
        return torch.cat([y.mean(dim=(2, 3, 4)), flags], 1)


def test_i3d_loads_torchscript_detector(tmp_path):
    path = tmp_path / "i3d_torchscript.pt"
    torch.jit.save(torch.jit.script(_FakeScriptedI3D()), path)
    det = load_i3d(path)
    assert isinstance(det, torch.jit.ScriptModule)
    v = _videos(2)
    out = I3DFeatures(det)(v)
    expected = v.float().mean(dim=(1, 2, 3)) / 127.5 - 1  # channel means after rescale to [-1, 1]
    torch.testing.assert_close(out[:, :3], expected)
    assert torch.equal(out[:, 3:], torch.ones(2, 2))  # called with resize=True, return_features=True


# ----------------------------------------------------------------------------------------------
# VideoMAE (CD-FVD)

def _tiny_videomae_config(**kw):
    from transformers import VideoMAEConfig

    base = dict(image_size=32, patch_size=8, num_frames=16, tubelet_size=2, hidden_size=48, num_hidden_layers=2,
                num_attention_heads=4, intermediate_size=96, num_labels=5, use_mean_pooling=True)
    return VideoMAEConfig(**{**base, **kw})


def test_videomae_folder_end_to_end(tmp_path):
    from transformers import VideoMAEForVideoClassification

    from medsora.metrics.videomae import VideoMAEFeatures, load_videomae

    torch.manual_seed(0)
    VideoMAEForVideoClassification(_tiny_videomae_config()).save_pretrained(tmp_path / "videomae")
    model = load_videomae(tmp_path / "videomae")
    feats = VideoMAEFeatures(model)
    v = _videos(3, size=40)
    f = feats(v)
    assert f.shape == (3, 48)
    # the feature is exactly the classifier's input: classifier(feature) equals the model's logits
    x = torch.nn.functional.interpolate(v.permute(0, 1, 4, 2, 3).flatten(0, 1).float(), size=(32, 32),
                                        mode="bilinear", align_corners=False).unflatten(0, (3, 16)) / 255
    with torch.no_grad():
        logits = model(pixel_values=x).logits
    torch.testing.assert_close(model.classifier(f), logits, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(torch.cat([feats(v[:1]), feats(v[1:])]), f, rtol=1e-4, atol=1e-5)
    assert torch.equal(feats(v), f)


def _sinusoid(n, d):
    """Sinusoid position table of VideoMAE, written out from its formula."""
    pos = np.arange(n)[:, None] / np.power(10000, 2 * (np.arange(d) // 2) / d)[None]
    pos[:, 0::2], pos[:, 1::2] = np.sin(pos[:, 0::2]), np.cos(pos[:, 1::2])
    return torch.tensor(pos, dtype=torch.float32)


def _v2_reference(sd, x, heads):
    """VideoMAE-v2 `forward_features` written out from its definition, for a v2-layout state dict."""
    f = torch.nn.functional
    w = sd["patch_embed.proj.weight"]
    tok = f.conv3d(x, w, sd["patch_embed.proj.bias"], stride=w.shape[2:]).flatten(2).transpose(1, 2)
    tok = tok + _sinusoid(tok.shape[1], tok.shape[2])
    b, n, d = tok.shape
    i = 0
    while f"blocks.{i}.norm1.weight" in sd:
        p = lambda k: sd[f"blocks.{i}.{k}"]  # noqa: E731
        h = f.layer_norm(tok, (d,), p("norm1.weight"), p("norm1.bias"), eps=1e-6)
        bias = torch.cat([p("attn.q_bias"), torch.zeros_like(p("attn.v_bias")), p("attn.v_bias")])
        q, k, v = (h @ p("attn.qkv.weight").T + bias).reshape(b, n, 3, heads, -1).permute(2, 0, 3, 1, 4)
        a = ((q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5).softmax(-1)
        tok = tok + (a @ v).transpose(1, 2).reshape(b, n, d) @ p("attn.proj.weight").T + p("attn.proj.bias")
        h = f.layer_norm(tok, (d,), p("norm2.weight"), p("norm2.bias"), eps=1e-6)
        h = f.gelu(h @ p("mlp.fc1.weight").T + p("mlp.fc1.bias"))
        tok = tok + h @ p("mlp.fc2.weight").T + p("mlp.fc2.bias")
        i += 1
    return f.layer_norm(tok.mean(1), (d,), sd["fc_norm.weight"], sd["fc_norm.bias"], eps=1e-6)


def test_videomae_v2_checkpoint_converted(tmp_path):
    """A VideoMAE-v2 fine-tune checkpoint (CD-FVD's format, {'module': state dict}) → transformers."""
    from medsora.metrics.videomae import VideoMAEFeatures, load_videomae

    g = torch.Generator().manual_seed(0)
    d, depth, hidden = 48, 2, 96
    r = lambda *s: torch.randn(*s, generator=g) * 0.2  # noqa: E731
    sd = {"patch_embed.proj.weight": r(d, 3, 2, 16, 16), "patch_embed.proj.bias": r(d),
          "fc_norm.weight": 1 + r(d), "fc_norm.bias": r(d), "head.weight": r(7, d), "head.bias": r(7)}
    for i in range(depth):
        sd |= {f"blocks.{i}.norm1.weight": 1 + r(d), f"blocks.{i}.norm1.bias": r(d),
               f"blocks.{i}.attn.qkv.weight": r(3 * d, d), f"blocks.{i}.attn.q_bias": r(d),
               f"blocks.{i}.attn.v_bias": r(d), f"blocks.{i}.attn.proj.weight": r(d, d),
               f"blocks.{i}.attn.proj.bias": r(d), f"blocks.{i}.norm2.weight": 1 + r(d),
               f"blocks.{i}.norm2.bias": r(d), f"blocks.{i}.mlp.fc1.weight": r(hidden, d),
               f"blocks.{i}.mlp.fc1.bias": r(hidden), f"blocks.{i}.mlp.fc2.weight": r(d, hidden),
               f"blocks.{i}.mlp.fc2.bias": r(d)}
    torch.save({"module": sd}, tmp_path / "vit_g_hybrid_pt_1200e_ssv2_ft.pth")
    model = load_videomae(tmp_path / "vit_g_hybrid_pt_1200e_ssv2_ft.pth", num_heads=4)
    cfg = model.config
    shape = (cfg.hidden_size, cfg.num_hidden_layers, cfg.patch_size, cfg.tubelet_size, cfg.num_labels)
    assert shape == (d, 2, 16, 2, 7)
    v = _videos(2, size=224)
    x = v.permute(0, 4, 1, 2, 3).float() / 255  # already 224 px: CD-FVD's input is just [0, 1]
    torch.testing.assert_close(VideoMAEFeatures(model)(v), _v2_reference(sd, x, heads=4), rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------------------------
# Inception-v3 (FID, IS)

@pytest.fixture(scope="module")
def inception_file(tmp_path_factory):
    from medsora.metrics.inception import fid_inception_v3

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("inception") / "pt_inception-2015-12-05-6726825d.pth"
    torch.save(he_init_(fid_inception_v3()).state_dict(), path)
    return path


def test_inception_matches_pytorch_fid(inception_file, monkeypatch):
    """pool3 at 299 px equals pytorch-fid's own InceptionV3 wrapper on the same weights file."""
    import pytorch_fid.inception as pf

    from medsora.metrics.inception import InceptionFeatures, load_inception

    monkeypatch.setattr(pf, "load_state_dict_from_url", lambda *a, **k: torch.load(inception_file))
    ref = pf.InceptionV3([3]).eval()
    net = load_inception(inception_file)
    ext = InceptionFeatures(net)
    frames = _videos(1, t=2, size=48)[0]  # (2, 48, 48, 3)
    feats, probs = ext(frames)
    with torch.no_grad():
        expected = ref(frames.permute(0, 3, 1, 2).float() / 255)[0].flatten(1)
    assert feats.shape == (2, 2048) and probs.shape == (2, 1008)
    tol = dict(rtol=1e-4, atol=1e-4 * expected.abs().max().item())
    torch.testing.assert_close(feats, expected, **tol)
    assert (feats[0] - feats[1]).abs().max() > 1e-2 * feats.abs().max()  # features depend on the input
    # IS probabilities: softmax of the 1008 logits without the classifier bias
    torch.testing.assert_close(probs, (expected @ net.fc.weight.T).softmax(-1), rtol=1e-3, atol=1e-6)
    # batch-size invariance and determinism (smallest input the network takes: cheap)
    small = InceptionFeatures(net, size=75)
    f2, _ = small(frames)
    f1, none = small(frames[:1], with_probs=False)
    torch.testing.assert_close(f1[0], f2[0], **tol)
    assert none is None and torch.equal(small(frames)[0], f2)


class _FakeScriptedInception(nn.Module):
    """Same call signature as StyleGAN's inception-2015-12-05.pt."""

    def forward(self, x: torch.Tensor, return_features: bool = False, use_fp16: bool = False,
                no_output_bias: bool = False):
        assert x.dtype == torch.uint8
        m = x.float().mean(dim=(2, 3))  # (n, 3)
        if return_features:
            return m
        assert no_output_bias
        return m.softmax(-1)


def test_inception_loads_torchscript(tmp_path):
    from medsora.metrics.inception import InceptionFeatures, load_inception

    torch.jit.save(torch.jit.script(_FakeScriptedInception()), tmp_path / "inception-2015-12-05.pt")
    net = load_inception(tmp_path / "inception-2015-12-05.pt")
    frames = _videos(1, t=4)[0]
    f, p = InceptionFeatures(net)(frames)
    torch.testing.assert_close(f, frames.float().mean(dim=(1, 2)))
    torch.testing.assert_close(p, f.softmax(-1))


# ----------------------------------------------------------------------------------------------
# CLIP (FC)

@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    """A tiny full CLIPModel (text + vision) saved like the hub's openai/clip-vit-large-patch14."""
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(0)
    cfg = CLIPConfig(
        text_config=dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                         vocab_size=99, max_position_embeddings=16),
        vision_config=dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                           image_size=32, patch_size=8),
        projection_dim=16,
    )
    path = tmp_path_factory.mktemp("clip") / "clip-vit-large-patch14"
    CLIPModel(cfg).save_pretrained(path)
    return path


def test_clip_embeddings_match_clip_model(clip_dir):
    from transformers import CLIPModel

    from medsora.metrics.clip_fc import CLIP_MEAN, CLIP_STD, CLIPEmbeddings, load_clip

    ext = CLIPEmbeddings(load_clip(clip_dir), folder=clip_dir)
    frames = _videos(1, t=3, size=32)[0]  # already at the model size: preprocessing is only mean/std
    emb = ext(frames)
    x = frames.permute(0, 3, 1, 2).float() / 255
    x = (x - torch.tensor(CLIP_MEAN)[:, None, None]) / torch.tensor(CLIP_STD)[:, None, None]
    with torch.no_grad():
        ref = CLIPModel.from_pretrained(clip_dir).get_image_features(pixel_values=x)
    ref = getattr(ref, "pooler_output", ref)
    torch.testing.assert_close(emb, torch.nn.functional.normalize(ref, dim=-1), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ext(frames[:1]), emb[:1], rtol=1e-4, atol=1e-5)
    assert ext(_videos(1, t=2, size=50)[0]).shape == (2, 16)  # other sizes: resized and cropped


def test_frame_consistency_constant_and_shuffled(clip_dir):
    from medsora.metrics.clip_fc import CLIPEmbeddings, frame_consistency, load_clip

    ext = CLIPEmbeddings(load_clip(clip_dir))
    const = _videos(1, t=1, size=32).expand(1, 16, 32, 32, 3)
    fc_const = frame_consistency(ext(const[0])[None])
    torch.testing.assert_close(fc_const, torch.tensor([100.0]), rtol=0, atol=1e-3)
    # a smooth video: a bright square sliding across a gradient; shuffling its frames lowers FC
    yy, xx = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
    frames = []
    for t in range(16):
        img = (xx * 4 + yy * 2).float()
        img[8:20, t:t + 12] = 255
        frames.append(img.clamp(0, 255).to(torch.uint8)[..., None].expand(32, 32, 3))
    video = torch.stack(frames)
    shuffled = video[torch.randperm(16, generator=torch.Generator().manual_seed(0))]
    fc_smooth = frame_consistency(ext(video)[None])
    fc_shuffled = frame_consistency(ext(shuffled)[None])
    assert fc_shuffled < fc_smooth < 100
