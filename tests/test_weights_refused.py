"""One rule for every network's weights (medsora.weights_check): an unreadable file, or tensors that do not cover
the network exactly, is refused with a one-line `WeightsError` naming the file (and the counts), never loaded as a
random init. Each test writes its own small random weight files."""
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from medsora.errors import MedsoraError
from medsora.vae.autoencoder import WEIGHTS_NAME, VideoVAE
from medsora.weights_check import WeightsError


def truncate(path, keep=0.5):
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])


def assert_one_line(err, *parts):
    msg = str(err.value)
    assert isinstance(err.value, MedsoraError) and "\n" not in msg, msg
    for p in parts:
        assert str(p) in msg, (p, msg)
    return msg


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("vae") / "vae"
    VideoVAE.tiny(seed=0).save_pretrained(folder)
    return folder


def copy_folder(src, dst):
    dst.mkdir(parents=True)
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


# ------------------------------------------------------------------------------------------------
# VAE


def test_vae_folder_missing_tensors_is_refused_with_counts(tiny_folder, tmp_path):
    folder = copy_folder(tiny_folder, tmp_path / "vae")
    sd = load_file(str(folder / WEIGHTS_NAME))
    keep = sorted(sd)[0]
    save_file({keep: sd[keep]}, str(folder / WEIGHTS_NAME))
    with pytest.raises(WeightsError) as err:
        VideoVAE.from_pretrained(folder)
    n = len(sd)
    assert_one_line(err, folder / WEIGHTS_NAME, f"{n - 1} of {n} tensors missing", "re-download")


def test_vae_folder_with_truncated_weights_is_refused(tiny_folder, tmp_path):
    folder = copy_folder(tiny_folder, tmp_path / "vae")
    truncate(folder / WEIGHTS_NAME)
    with pytest.raises(WeightsError) as err:
        VideoVAE.from_pretrained(folder)
    assert_one_line(err, folder / WEIGHTS_NAME, "not a readable safetensors", "re-download")


def test_vae_config_with_one_block_is_refused_naming_config(tiny_folder, tmp_path):
    folder = copy_folder(tiny_folder, tmp_path / "vae")
    cfg = json.loads((folder / "config.json").read_text())
    cfg["block_out_channels"] = [16]
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(WeightsError) as err:
        VideoVAE.from_pretrained(folder)
    assert_one_line(err, folder / "config.json", "does not build a CogVideoX VAE")
    (folder / "config.json").write_text("{not json")
    with pytest.raises(WeightsError) as err:
        VideoVAE.from_pretrained(folder)
    assert_one_line(err, folder / "config.json")


def test_vae_config_of_another_size_gives_counts(tiny_folder, tmp_path):
    folder = copy_folder(tiny_folder, tmp_path / "vae")
    cfg = json.loads((folder / "config.json").read_text())
    cfg["layers_per_block"] = 2  # builds, but holds more tensors than the file
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(WeightsError) as err:
        VideoVAE.from_pretrained(folder)
    assert_one_line(err, folder / WEIGHTS_NAME, folder / "config.json", "tensors missing")


def test_cli_sample_with_broken_vae_folder_is_one_error_line(tiny_folder, tmp_path, capsys):
    from medsora.checkpoint import save_checkpoint
    from medsora.cli import main
    from medsora.config import load_config, to_dict

    folder = copy_folder(tiny_folder, tmp_path / "vae")
    sd = load_file(str(folder / WEIGHTS_NAME))
    save_file({k: v for k, v in list(sd.items())[1:]}, str(folder / WEIGHTS_NAME))
    model = torch.nn.Linear(2, 2)
    save_checkpoint(tmp_path / "run", 1, model, None, torch.optim.SGD(model.parameters(), lr=0.1),
                    to_dict(load_config("tiny")))
    rc = main(["sample", str(tmp_path / "run"), "--out", str(tmp_path / "s"), "--vae", str(folder),
               "--device", "cpu"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("error: "), err
    assert str(folder / WEIGHTS_NAME) in err[0] and f"1 of {len(sd)} tensors missing" in err[0]


# ------------------------------------------------------------------------------------------------
# compensation


def test_truncated_compensation_file_is_refused(tmp_path):
    vae = VideoVAE.tiny(seed=0)
    vae.add_compensation()
    path = vae.save_compensation(tmp_path / "comp.safetensors")
    truncate(path)
    other = VideoVAE.tiny(seed=0)
    with pytest.raises(WeightsError) as err:
        other.load_compensation(path)
    assert_one_line(err, path, "not a readable safetensors", "re-download")
    assert other.compensation is None


def test_compensation_file_missing_tensors_gives_counts(tmp_path):
    vae = VideoVAE.tiny(seed=0)
    vae.add_compensation()
    path = vae.save_compensation(tmp_path / "comp.safetensors")
    sd = load_file(str(path))
    save_file(dict(list(sd.items())[2:]), str(path))
    with pytest.raises(WeightsError) as err:
        VideoVAE.tiny(seed=0).load_compensation(path)
    assert_one_line(err, path, f"2 of {len(sd)} tensors missing")


# ------------------------------------------------------------------------------------------------
# DINO and RAFT


def small_dino_kwargs():
    return dict(depth=2, embed_dim=48, num_heads=3)


def test_dino_truncated_and_missing_keys_are_refused(tmp_path):
    import timm

    from medsora.flow.dino import DINO_NAME, load_dino

    model = timm.create_model(DINO_NAME, pretrained=False, num_classes=0, img_size=64, **small_dino_kwargs())
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    path = tmp_path / "dino.safetensors"
    save_file(sd, str(path))
    load_dino(path, img_size=64, **small_dino_kwargs())  # the whole file loads
    save_file({k: v for k, v in sd.items() if not k.startswith("blocks.1.")}, str(path))
    n_missing = sum(k.startswith("blocks.1.") for k in sd)
    with pytest.raises(WeightsError) as err:
        load_dino(path, img_size=64, **small_dino_kwargs())
    assert_one_line(err, path, f"{n_missing} of {len(sd)} tensors missing", "blocks.1.")
    save_file(sd, str(path))
    truncate(path)
    with pytest.raises(WeightsError) as err:
        load_dino(path, img_size=64, **small_dino_kwargs())
    assert_one_line(err, path, "not a readable safetensors", "re-download")
    pth = tmp_path / "dino.pth"
    torch.save(sd, pth)
    truncate(pth, 0.3)
    with pytest.raises(WeightsError) as err:
        load_dino(pth, img_size=64, **small_dino_kwargs())
    assert_one_line(err, pth, "not a readable torch", "re-download")


def test_raft_file_of_another_network_is_refused(tmp_path):
    import torchvision

    from medsora.flow.flow import RAFTFlow

    other = torchvision.models.alexnet()
    path = tmp_path / "raft_small_C_T_V2-01064c6d.pth"
    torch.save(other.state_dict(), path)
    with pytest.raises(WeightsError) as err:
        RAFTFlow("raft_small", weights=path)
    msg = assert_one_line(err, path, "does not hold raft_small weights", "tensors missing", "unexpected tensors")
    assert "download" in msg
    path.write_bytes(b"not a torch file at all")
    with pytest.raises(WeightsError) as err:
        RAFTFlow("raft_small", weights=path)
    assert_one_line(err, path, "not a readable torch")


# ------------------------------------------------------------------------------------------------
# metric networks and LPIPS


def test_i3d_state_dict_missing_tensors_and_truncated(tmp_path):
    from medsora.metrics.i3d import InceptionI3d, load_i3d

    sd = InceptionI3d().state_dict()
    path = tmp_path / "rgb_imagenet.pt"
    torch.save({k: v for k, v in sd.items() if not k.startswith("Mixed_5c.")}, path)
    n_missing = sum(k.startswith("Mixed_5c.") for k in sd)
    with pytest.raises(WeightsError) as err:
        load_i3d(path)
    assert_one_line(err, path, f"{n_missing} of {len(sd)} tensors missing")
    torch.save(sd, path)
    truncate(path)
    with pytest.raises(WeightsError) as err:
        load_i3d(path)
    assert_one_line(err, path, "not a readable torch", "re-download")


def test_inception_state_dict_of_another_network_is_refused(tmp_path):
    import torchvision

    from medsora.metrics.inception import load_inception

    path = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
    torch.save(torchvision.models.alexnet().state_dict(), path)
    with pytest.raises(WeightsError) as err:
        load_inception(path)
    assert_one_line(err, path, "tensors missing", "unexpected tensors", "pytorch-fid")


def test_videomae_v2_file_missing_tensors_is_refused(tmp_path):
    from medsora.metrics.videomae import load_videomae

    path = tmp_path / "vit_g_hybrid_pt_1200e_ssv2_ft.pth"
    torch.save({"model": {"patch_embed.proj.weight": torch.zeros(8, 3, 2, 16, 16)}}, path)
    with pytest.raises(WeightsError) as err:
        load_videomae(path, num_heads=4)
    assert_one_line(err, path, "VideoMAE")


def test_clip_folder_missing_vision_tensors_is_refused(tmp_path):
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from medsora.metrics.clip_fc import load_clip

    cfg = CLIPVisionConfig(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                           image_size=32, patch_size=8, projection_dim=16)
    folder = tmp_path / "clip"
    CLIPVisionModelWithProjection(cfg).save_pretrained(folder)
    load_clip(folder)  # whole folder loads
    weights = folder / "model.safetensors"
    sd = load_file(str(weights))
    drop = [k for k in sd if "layers.1." in k]
    save_file({k: v for k, v in sd.items() if k not in drop}, str(weights), metadata={"format": "pt"})
    with pytest.raises(WeightsError) as err:
        load_clip(folder)
    assert_one_line(err, folder, f"{len(drop)} missing tensors")


def test_lpips_trunk_of_another_network_is_refused(tmp_path):
    from medsora.vae.perceptual import load_lpips

    path = tmp_path / "alexnet.pth"
    torch.save({"features.0.weight": torch.zeros(3)}, path)
    with pytest.raises(WeightsError) as err:
        load_lpips("alex", trunk_path=path)
    assert_one_line(err, path, "tensors missing", "size mismatch")
