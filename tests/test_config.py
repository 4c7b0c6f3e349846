import pytest

from medsora.config import ConfigError, from_dict, latent_frames, load_config, preset, to_dict, to_yaml


def test_presets_match_table1():
    for name, depth, layers in [("S", 6, [0, 2, 4, 6, 8, 10]), ("B", 12, list(range(12))),
                                ("L", 24, [i // 2 for i in range(24)])]:
        cfg = load_config(name)
        assert cfg.model.depth == depth and list(cfg.model.align_layers) == layers
        assert (cfg.model.hidden_size, cfg.model.patch_size, cfg.model.d_state, cfg.model.headdim) == (512, 2, 128, 64)
        assert (cfg.data.num_frames, cfg.data.frame_stride, cfg.data.size, cfg.data.num_images) == (16, 3, 128, 8)
        assert cfg.model.input_size == (16, 16)
        assert (cfg.train.warm_lr, cfg.train.warm_batch_size, cfg.train.lr, cfg.train.batch_size) == (1e-3, 16, 1e-4, 2)
        assert cfg.train.align_weight == 0.01 and cfg.train.ema_decay == 0.9999


def test_yaml_and_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("preset: S\ntrain:\n  lr: 2.0e-4\ndata:\n  root: /data/x\n  size: 256\n")
    cfg = load_config("B", f, ["train.lr=5e-5", "model.align_layers=[1,1,2,2,3,3]", "data.hflip=false"])
    assert cfg.preset == "S" and cfg.model.depth == 6
    assert cfg.train.lr == 5e-5 and cfg.data.root == "/data/x" and cfg.data.hflip is False
    assert cfg.model.align_layers == (1, 1, 2, 2, 3, 3)
    assert cfg.model.input_size == (32, 32)  # follows data.size


def test_round_trip():
    cfg = load_config("tiny", overrides=["train.seed=7"])
    assert from_dict(to_dict(cfg)) == cfg
    assert "seed: 7" in to_yaml(cfg)


@pytest.mark.parametrize("override, field", [
    ("train.lr=-1", "train.lr"),
    ("train.lrr=1", "train.lrr"),
    ("data.num_frames=15", "data.num_frames"),
    ("data.size=100", "data.size"),
    ("data.num_images=3", "data.num_images"),
    ("model.align_layers=[1,2]", "model.align_layers"),
    ("model.input_size=[15,16]", "model.input_size"),
    ("diffusion.sampler=euler", "diffusion.sampler"),
    ("train.ema_decay=1.5", "train.ema_decay"),
    ("train.batch_size=two", "train.batch_size"),
    ("nosection.x=1", "nosection.x"),
])
def test_bad_values_name_the_field(override, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        load_config("B", overrides=[override])


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("B", tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config("B", tmp_path / "list.yaml")
    with pytest.raises(ConfigError, match="unknown preset"):
        load_config("XL")


def test_latent_frames():
    assert [latent_frames(n) for n in (16, 17, 8, 1, 4, 5)] == [4, 5, 2, 1, 1, 2]
    assert preset("tiny").model.in_channels == 4


def test_cli_overrides_anywhere_on_the_line(capsys):
    from medsora.cli import main

    assert main(["config", "show", "train.seed=3", "--preset", "S", "data.size=256"]) == 0
    out = capsys.readouterr().out
    assert "preset: S" in out and "seed: 3" in out and "size: 256" in out
    assert main(["config", "show", "B", "data.size=100"]) == 2
    assert "data.size=100 is not allowed" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--version"])
    from medsora import __version__

    assert capsys.readouterr().out.strip() == f"medsora {__version__}"


def test_cli_reports_bad_input_in_one_line(tmp_path, capsys):
    """Errors of the user's input (here: no cache, a foreign checkpoint, a truncated one) come out as one
    `error:` line naming the path and the fix, exit code 2, no traceback; `-v` raises the error itself."""
    from medsora.checkpoint import CheckpointError
    from medsora.cli import main

    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "meta.json").write_text("{}")
    truncated = tmp_path / "truncated"
    truncated.mkdir()
    (truncated / "meta.json").write_text('{"step": 1, "config": {}, "sha256": {"model.safetensors": "00"}}')
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [(["train", "--preset", "tiny", "--cache", str(tmp_path / "none"), "--run-dir", str(tmp_path / "run")],
              "run `medsora cache` first"),
             (["sample", str(foreign), "--out", str(tmp_path / "s")], "not a checkpoint written by medsora train"),
             (["sample", str(truncated), "--out", str(tmp_path / "s")], "missing or corrupt"),
             (["report", str(tmp_path / "none")], "pass a run folder"),
             (["eval", "--real", str(tmp_path / "none"), "--fake", str(empty)], "real videos"),
             (["eval", "--real", str(empty), "--fake", str(empty), "--weights", str(empty)], "no metric was computed")]
    for argv, fix in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        last = err.splitlines()[-1]                  # after any progress bar
        assert last.startswith("error: ") and fix in last and "Traceback" not in err, err
    assert not (tmp_path / "run").exists() and not (tmp_path / "none").exists()   # a refused command leaves nothing
    with pytest.raises(CheckpointError):
        main(["-v", "sample", str(foreign), "--out", str(tmp_path / "s")])


def test_weights_inventory_says_what_is_found_and_where_to_get_the_rest(tmp_path, capsys, monkeypatch):
    from medsora.cli import main
    from medsora.metrics import weights as W

    monkeypatch.delenv("MEDSORA_WEIGHTS", raising=False)
    monkeypatch.setattr(W, "DEFAULT_DIR", tmp_path / "no-default")
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "i3d_torchscript.pt").write_bytes(b"x")       # only looked up, never loaded
    (tmp_path / "w" / "clip").mkdir()
    (tmp_path / "vae").mkdir()
    assert main(["weights", "--weights", str(tmp_path / "w"), f"vae.path={tmp_path / 'vae'}",
                 "flow.method=farneback", f"flow.dino_weights={tmp_path / 'nope.pth'}"]) == 0
    out = capsys.readouterr().out
    assert f"found    I3D  [eval: FVD]\n         {tmp_path / 'w' / 'i3d_torchscript.pt'}" in out
    assert f"found    CLIP  [eval: FC]\n         {tmp_path / 'w' / 'clip'}" in out
    assert "found    CogVideoX VAE" in out and "RAFT" not in out                     # farneback needs no weights
    assert f"flow.dino_weights={tmp_path / 'nope.pth'} does not exist" in out
    assert "put pt_inception-2015-12-05-6726825d.pth in" in out                      # where to put it, and the URL
    assert out.rstrip().endswith("3 of 6 found; missing: DINO ViT-S/8, VideoMAE, Inception-v3")
