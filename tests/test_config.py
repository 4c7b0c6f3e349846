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
    assert out.rstrip().endswith("3 of 7 found; missing: DINO ViT-S/8, VideoMAE, Inception-v3, C3D UCF-101")


# ----------------------------------------------------------------------------------------------
# overrides and --config values are typed by the schema (issue 21)

@pytest.mark.parametrize("text", ["2024_01", "yes", "x #1", "@data", "*videos", '"[unclosed"', "'it", '"say hi',
                                  "[a, b]", "{x: 1}", "null", "~", "0x10", "- a", "a: b", "!!python/none"])
def test_string_overrides_are_taken_as_written(text):
    cfg = load_config("tiny", overrides=[f"data.root={text}", f"flow.dino_weights={text}", f"train.out_dir={text}"])
    assert cfg.data.root == cfg.flow.dino_weights == cfg.train.out_dir == text


@pytest.mark.parametrize("override, field, want", [
    ("model.depth=12 #deep", "model.depth", "integer"),
    ("train.seed=@1", "train.seed", "integer"),
    ("train.seed=*x", "train.seed", "integer"),
    ("train.lr='1e-4", "train.lr", "number"),
    ("train.grad_clip=inf", "train.grad_clip", "finite number"),
    ("diffusion.eta=.inf", "diffusion.eta", "not a number"),
    ("data.hflip=yes #x", "data.hflip", "true/false"),
    ("data.hflip=[yes", "data.hflip", "true/false"),
])
def test_number_and_bool_overrides_parse_strictly(override, field, want):
    with pytest.raises(ConfigError, match=rf"^{field.replace('.', r'[.]')}: .*{want}") as e:
        load_config("tiny", overrides=[override])
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("override, want", [
    ("model.align_layers=[0,1", "model.align_layers"),
    ("model.align_layers=*layers", "model.align_layers"),
    ("model.input_size=[8,8]]", "model.input_size"),
    ("model.input_size=[8,[8]]", "model.input_size"),
    ("model.align_layers=[0,,1]", "model.align_layers"),
])
def test_tuple_overrides_refuse_garbage_in_one_line(override, want):
    with pytest.raises(ConfigError, match=rf"^{want.replace('.', r'[.]')}: .*list of int.*e\.g\.") as e:
        load_config("tiny", overrides=[override])
    assert "\n" not in str(e.value)


def test_tuple_overrides_take_python_style_lists():
    cfg = load_config("tiny", overrides=["model.input_size=(8, 8)", "model.align_layers=( 1 , 0 )"])
    assert cfg.model.input_size == (8, 8) and cfg.model.align_layers == (1, 0)


def test_overrides_that_worked_keep_working():
    """Passes on the code before issue 21 too: the forms users and the package itself write."""
    cfg = load_config("tiny", overrides=[
        "data.root=", "train.lr=1e-4", "train.warm_lr=2.0e-4", "train.ema_decay=.5", "train.max_steps=2.0",
        "train.seed=+7", "data.hflip=False", "train.align=YES", "model.recompute=1", "train.joint_images=off",
        "model.align_layers=[0, 1]", "model.input_size=8,8", "diffusion.sampler=ddpm", " train.epochs = 3"])
    assert cfg.data.root == "" and cfg.train.lr == 1e-4 and cfg.train.warm_lr == 2e-4 and cfg.train.ema_decay == 0.5
    assert cfg.train.max_steps == 2 and cfg.train.seed == 7 and cfg.train.epochs == 3
    assert cfg.data.hflip is False and cfg.train.align is True and cfg.model.recompute is True
    assert cfg.train.joint_images is False and cfg.diffusion.sampler == "ddpm"
    assert cfg.model.align_layers == (0, 1) and cfg.model.input_size == (8, 8)
    assert load_config("tiny", overrides=["model.align_layers=[]"]).model.align_layers == ()
    assert load_config("tiny", overrides=["model.align_layers=", "model.depth=1"]).model.align_layers == ()
    assert load_config("S", overrides=["model.align_layers=1,1,2 2 3 3"]).model.align_layers == (1, 1, 2, 2, 3, 3)


def test_config_file_values_are_typed_by_the_schema(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("data:\n  root: 2024_01\n  index_dir: yes\n  hflip: no\nflow:\n  dino_weights: 202401\n"
                 "  raft_weights: null\ntrain:\n  lr: 1e-4\n  seed: \"7\"\n  out_dir: x #1\n"
                 "model:\n  align_layers: [1, 0]\n")
    cfg = load_config("tiny", f)
    assert (cfg.data.root, cfg.data.index_dir, cfg.flow.dino_weights) == ("2024_01", "yes", "202401")
    assert cfg.flow.raft_weights == "" and cfg.train.out_dir == "x"          # YAML's null and comment rules
    assert cfg.data.hflip is False and cfg.train.lr == 1e-4 and cfg.train.seed == 7
    assert cfg.model.align_layers == (1, 0)


@pytest.mark.parametrize("text, want", [
    ("train:\n  seed: seven\n", r"line 2.*train[.]seed: 'seven' is not an integer"),
    ("data:\n  root: [a, b]\n", r"line 2.*data[.]root: .*text"),
    ("data:\n  hflip: {a: 1}\n", r"line 2.*data[.]hflip: .*true/false"),
    ("model:\n  align_layers: [[0], [1]]\n", r"line 2.*model[.]align_layers: .*list of int"),
    ("train:\n  seed: 1\ntrain:\n  lr: 1.0e-3\n", r"line 3.*'train' is given twice"),
    ("train:\n  seed: 1\n  seed: 2\n", r"line 3.*train[.]seed is given twice"),
])
def test_config_file_values_name_file_line_and_key(tmp_path, text, want):
    f = tmp_path / "c.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=rf"^config file .*c[.]yaml.*{want}") as e:
        load_config("tiny", f)
    assert "\n" not in str(e.value)


def test_config_file_empty_section_is_allowed(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("preset: S\ntrain:\n# nothing set yet\ndata: {}\n")
    assert load_config("tiny", f).preset == "S"


# the classic "billion laughs": 9 levels of 9 aliases expand to 9**9 strings, here inside data.root
BILLION_LAUGHS = ("data:\n  root:\n    - &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
                  + "".join(f"    - &{c} [{', '.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi")))


def test_config_file_billion_laughs_is_refused_quickly(tmp_path):
    import time

    f = tmp_path / "laughs.yaml"
    f.write_text(BILLION_LAUGHS)
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match=r"laughs[.]yaml, line 3, column 7: YAML anchors and aliases") as e:
        load_config("tiny", f)
    assert time.perf_counter() - t0 < 1.0 and "\n" not in str(e.value) and len(str(e.value)) < 400


def test_config_file_is_size_bounded_and_must_be_utf8(tmp_path):
    big = tmp_path / "big.yaml"
    big.write_text("train:\n  seed: 1\n" + "#" * (1 << 20) + "\n")
    with pytest.raises(ConfigError, match=r"big[.]yaml is .*larger than 1 MiB"):
        load_config("tiny", big)
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("data:\n  root: /données/côlon\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin[.]yaml is not UTF-8 text.*line 2.*save it as UTF-8") as e:
        load_config("tiny", latin)
    assert "\n" not in str(e.value)
    bom = tmp_path / "bom.yaml"
    bom.write_bytes("data:\n  root: /données\n".encode("utf-8-sig"))
    assert load_config("tiny", bom).data.root == "/données"
    with pytest.raises(ConfigError, match="is a folder"):
        load_config("tiny", tmp_path)
    many = tmp_path / "many.yaml"          # under 1 MiB, but far more values than any config holds
    many.write_text("data:\n  root: [" + ", ".join(["x"] * 20_000) + "]\n")
    with pytest.raises(ConfigError, match=r"many[.]yaml, line 2, .*more than 10000 values"):
        load_config("tiny", many)


@pytest.mark.parametrize("text, line", [
    ("data:\n  root: [x\n  size: 64\n", 3),
    ("train:\n  seed: 1\n   lr: 2\n", 3),
    ("data:\n  root: 'unclosed\n", 3),
    pytest.param("[" * 100_000, 1, id="100000-nested-lists"),
])
def test_config_file_syntax_error_names_file_and_line(tmp_path, text, line):
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=rf"^config file .*bad[.]yaml, line {line}\b") as e:
        load_config("tiny", f)
    assert "\n" not in str(e.value) and len(str(e.value)) < 400


@pytest.mark.parametrize("override, field", [
    ("model.attn_heads=0", "model.attn_heads"),
    ("model.attn_heads=-2", "model.attn_heads"),
    ("model.headdim=0", "model.headdim"),
    ("model.headdim=-64", "model.headdim"),
    ("model.ngroups=3", "model.ngroups"),
    ("train.seed=-1", "train.seed"),
    ("train.seed=4294967296", "train.seed"),
])
def test_validate_refuses_nonpositive_counts(override, field):
    with pytest.raises(ConfigError, match=rf"^{field.replace('.', r'[.]')}="):
        load_config("B", overrides=[override])


def test_cli_config_show_keeps_a_string_root(capsys):
    from medsora.cli import main

    assert main(["config", "show", "tiny", "data.root=2024_01"]) == 0
    assert "root: '2024_01'" in capsys.readouterr().out
    assert main(["config", "show", "tiny", "data.root=@data", "flow.dino_weights=*w #2"]) == 0
    out = capsys.readouterr().out
    assert "root: '@data'" in out and "dino_weights: '*w #2'" in out


def test_cli_billion_laughs_config_is_one_line_exit_2(tmp_path, capsys):
    import time

    from medsora.cli import main

    f = tmp_path / "laughs.yaml"
    f.write_text(BILLION_LAUGHS)
    t0 = time.perf_counter()
    assert main(["config", "show", "--config", str(f)]) == 2
    assert time.perf_counter() - t0 < 1.0
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: config file ") and str(f) in lines[0], captured.err
    assert "lol" not in lines[0] and captured.out == ""


def test_docs_config_md_is_in_sync_with_the_code():
    """docs/config.md is generated from the dataclasses and their comments; a change to either must regenerate it."""
    import importlib.util
    from pathlib import Path

    docs = Path(__file__).resolve().parents[1] / "docs"
    spec = importlib.util.spec_from_file_location("make_config_md", docs / "make_config_md.py")
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    assert gen.render() == (docs / "config.md").read_text(), "run `python docs/make_config_md.py` and commit the result"
