"""torch.compile of the backbone: no graph break in the Mamba-2 scan, the same training and samples as eager, and
checkpoints that move between the two. The fast tests compile with the "aot_eager" backend (dynamo's graph and
AOTAutograd's joint forward/backward, as inductor receives them, without the C++ build that takes minutes on 2
cores); `-m slow` checks inductor itself."""
import pytest
import torch
from safetensors.torch import load_file

from medsora import runtime
from medsora.config import load_config
from medsora.models.medsora import build_model
from medsora.sample import sample
from medsora.train import train

from tiny_helpers import tiny_cfg


def tiny_model():
    torch.manual_seed(0)
    model = build_model(load_config("tiny", overrides=["model.attn_dropout=0"]).model)
    for p in model.parameters():             # non-zero everywhere: zero-initialised gates would hide a wrong graph
        torch.nn.init.normal_(p, std=0.05)
    return model


@pytest.mark.parametrize("grad", [True, False], ids=["training", "sampling"])
def test_the_backbone_compiles_as_one_graph(grad):
    import torch._dynamo as dynamo

    model, x, t = tiny_model(), torch.randn(2, 6, 4, 8, 8), torch.tensor([3, 700])
    with torch.set_grad_enabled(grad):
        ex = dynamo.explain(lambda a, b: model(a, b, num_video_frames=4, return_features=grad))(x, t)
    assert ex.graph_break_count == 0, [b.reason.splitlines()[0] for b in ex.break_reasons]
    assert ex.graph_count == 1


def _forward_backward(model, x, t, call=None):
    out = (model if call is None else call)(x, t, num_video_frames=4)
    out.square().mean().backward()
    return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.slow
def test_inductor_output_and_gradients_equal_eager():
    eager, compiled = tiny_model(), tiny_model()
    x, t = torch.randn(2, 6, 4, 8, 8), torch.tensor([3, 700])
    y, g = _forward_backward(eager, x, t)
    yc, gc = _forward_backward(compiled, x, t, call=torch.compile(compiled))
    torch.testing.assert_close(yc, y, rtol=1e-4, atol=1e-5)
    assert g.keys() == gc.keys() and g
    for k in g:
        torch.testing.assert_close(gc[k], g[k], rtol=1e-3, atol=1e-5, msg=k)


def test_compiled_training_and_sampling_equal_eager_and_checkpoints_interchange(cache, synth_mp4, vae, tmp_path,
                                                                                 monkeypatch, same_training):
    monkeypatch.setattr(runtime, "COMPILE_BACKEND", "aot_eager")
    base = ["train.batch_size=4", "model.attn_dropout=0", "train.ckpt_every=2"]
    lr = tiny_cfg(synth_mp4).train.lr
    train(tiny_cfg(synth_mp4, *base, "train.max_steps=3"), cache, tmp_path / "eager", progress=False)
    # 2 compiled steps, then resumed without compile: the compiled run's checkpoint is an ordinary one
    train(tiny_cfg(synth_mp4, *base, "train.max_steps=2", "train.compile=true"), cache, tmp_path / "mixed",
          progress=False)
    assert not any("_orig_mod" in k for k in load_file(tmp_path / "mixed/checkpoints/step-00000002/model.safetensors"))
    train(tiny_cfg(synth_mp4, *base, "train.max_steps=3"), cache, tmp_path / "mixed", resume="auto", progress=False)
    same_training(tmp_path / "eager", tmp_path / "mixed", lr, names=("model.safetensors", "ema.safetensors"))

    kw = dict(num=2, batch_size=2, steps=4, progress=False)
    sample(tmp_path / "eager", vae, tmp_path / "s_eager", **kw)
    sample(tmp_path / "eager", vae, tmp_path / "s_compiled", compile=True, **kw)
    a, b = (load_file(tmp_path / d / "latents.safetensors")["latents"] for d in ("s_eager", "s_compiled"))
    torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)
