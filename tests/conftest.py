import pytest


@pytest.fixture(scope="session")
def synth_mp4(tmp_path_factory):
    """4 synthetic endoscopy mp4 videos of 40 frames at 64 px (deterministic)."""
    from medsora.data.synth import write_dataset

    out = tmp_path_factory.mktemp("synth_mp4")
    write_dataset(out, videos=4, seed=0, frames=40, size=64, fmt="mp4")
    return out


@pytest.fixture(scope="session")
def vae():
    """The tiny 3D causal VAE (random, seed 0) that the cache, train and sample tests encode with; read-only."""
    from medsora.vae.autoencoder import VideoVAE

    return VideoVAE.tiny(seed=0).eval()


@pytest.fixture(scope="module")
def cache(synth_mp4, vae, tmp_path_factory):
    """A tiny latent cache of `synth_mp4` (tiny_helpers.tiny_cfg, shards of 3 clips), one per test module."""
    from medsora.cache import build_cache
    from tiny_helpers import tiny_cfg

    out = tmp_path_factory.mktemp("cache")
    build_cache(tiny_cfg(synth_mp4), vae, out, shard_size=3, progress=False)
    return out


@pytest.fixture(scope="session")
def synth_frames(tmp_path_factory):
    """3 synthetic videos as folders of PNG frames, nested one level down."""
    from medsora.data.synth import write_dataset

    out = tmp_path_factory.mktemp("synth_frames")
    write_dataset(out / "nested", videos=3, seed=1, frames=40, size=64, fmt="frames")
    return out


def _saved_bytes(fn, module):
    """Run fn() and count the bytes autograd keeps for the backward: distinct storages, `module`'s weights
    excluded. Returns (fn's result, bytes)."""
    import torch

    storages, weights = {}, {p.untyped_storage().data_ptr() for p in module.parameters()}

    def pack(t):
        if t.untyped_storage().data_ptr() not in weights:
            storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, sum(storages.values())


@pytest.fixture
def saved_bytes():
    """`saved_bytes(fn, module) -> (result, bytes)`: what autograd keeps for the backward of fn()."""
    return _saved_bytes


def _assert_same_training(run_a, run_b, lr, names=("model.safetensors",)):
    """Two runs that must take the same optimizer steps, up to float summation order (one batch vs micro-batches,
    one process vs two). The logged loss and gradient norm agree to 1e-5 relative, which catches a wrong 1/N
    scaling that AdamW itself would hide. The weights agree to 1% of one AdamW step (lr): AdamW divides by
    sqrt(v), so rounding in a gradient entry near zero grows into part of a step, and how much depends on the
    CPU's vector kernels (1e-7 on the 2-core dev machine, 1.6e-6 on CI, at lr 1e-3). A different batch moves
    the weights by about lr per step."""
    import json

    import torch
    from safetensors.torch import load_file

    from medsora.checkpoint import latest_checkpoint

    def rows(run):
        return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]

    ra, rb = rows(run_a), rows(run_b)
    assert [r["step"] for r in ra] == [r["step"] for r in rb] and ra
    for key in ("loss", "grad_norm"):
        torch.testing.assert_close(torch.tensor([r[key] for r in ra]), torch.tensor([r[key] for r in rb]),
                                   rtol=1e-5, atol=0, msg=f"logged {key} differs")
    for name in names:
        a, b = (load_file(latest_checkpoint(run) / name) for run in (run_a, run_b))
        assert a.keys() == b.keys()
        worst = max((a[k] - b[k]).abs().max().item() for k in a)
        assert worst <= 0.01 * lr, f"{name}: weights differ by {worst:.3g} > 1% of lr {lr}"


@pytest.fixture
def same_training():
    """`same_training(run_a, run_b, lr, names)`: the two runs took the same steps (see _assert_same_training)."""
    return _assert_same_training


def _write_tiny_metric_weights(folder, inception: bool = False):
    """Random tiny VideoMAE and CLIP folders (and, if asked, a random full-size Inception of FID) under the names
    `evaluate` looks for. Returns the folder."""
    import torch
    from transformers import CLIPConfig, CLIPModel, VideoMAEConfig, VideoMAEForVideoClassification

    torch.manual_seed(0)
    VideoMAEForVideoClassification(VideoMAEConfig(
        image_size=32, patch_size=8, num_frames=16, tubelet_size=2, hidden_size=48, num_hidden_layers=2,
        num_attention_heads=4, intermediate_size=96, num_labels=5)).save_pretrained(folder / "videomae")
    CLIPModel(CLIPConfig(
        text_config=dict(hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=4,
                         vocab_size=99, max_position_embeddings=16),
        vision_config=dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                           image_size=32, patch_size=8),
        projection_dim=16)).save_pretrained(folder / "clip-vit-large-patch14")
    if inception:
        from medsora.metrics.inception import fid_inception_v3

        net = fid_inception_v3()
        for m in net.modules():                      # He init: distinct class probabilities per frame
            if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
                torch.nn.init.kaiming_normal_(m.weight)
        torch.save(net.state_dict(), folder / "pt_inception-2015-12-05-6726825d.pth")
    return folder


@pytest.fixture(scope="session")
def write_metric_weights():
    """`write_metric_weights(folder, inception=False) -> folder`: random metric networks (see
    _write_tiny_metric_weights)."""
    return _write_tiny_metric_weights
