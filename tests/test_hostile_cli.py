"""The hostile user's corpus, at the command line: odd settings and damaged files, one case each, every one run
through `medsora ...` (cli.main) as a user types it. Each ends either in the right result (exit 0) or in one
`error:` line that names the file or key and the fix (exit 2); never a traceback.

The data reader's own odd files (rotation, VFR, raw streams, 16-bit frames, symlinks, stray images, ...) are the
`make_odd_corpus` cases of test_data_odd.py; the three data-loss paths are in test_no_loss.py.
"""
import json
import shutil
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from medsora.cli import main
from medsora.vae.autoencoder import WEIGHTS_NAME

BILLION_LAUGHS = ("data:\n  root:\n    - &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
                  + "".join(f"    - &{c} [{', '.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi")))


@pytest.fixture(scope="module")
def world(tmp_path_factory, vae, synth_mp4):
    """What the cases damage: a tiny VAE folder, a checkpoint, a cache manifest, weight files."""
    import torch

    from medsora.checkpoint import save_checkpoint
    from medsora.config import load_config, to_dict
    from medsora.models import build_model

    w = tmp_path_factory.mktemp("hostile")
    vae.save_pretrained(w / "vae")
    model = build_model("tiny")
    ckpt = save_checkpoint(w / "run", 3, model, None, torch.optim.AdamW(model.parameters()),
                           to_dict(load_config("tiny")), epoch=1, extra={"batch_in_epoch": 0, "skipped": 0})
    return {"root": w, "vae": w / "vae", "ckpt": ckpt, "data": synth_mp4}


def _truncated(path, src_bytes):
    path.write_bytes(src_bytes[: len(src_bytes) // 2])
    return path


# each case: (argv builder taking (world, tmp) -> argv, expected exit code, words the output must hold)
def _vae_one_tensor(w, t):
    folder = Path(shutil.copytree(w["vae"], t / "vae1"))
    sd = load_file(str(folder / WEIGHTS_NAME))
    save_file({k: sd[k] for k in sorted(sd)[:1]}, str(folder / WEIGHTS_NAME))
    return ["cache", "--out", str(t / "c"), "--device", "cpu", f"data.root={w['data']}", f"vae.path={folder}"]


def _vae_one_block(w, t):
    folder = Path(shutil.copytree(w["vae"], t / "vaeb"))
    cfg = json.loads((folder / "config.json").read_text())
    cfg["block_out_channels"] = cfg["block_out_channels"][:1]
    (folder / "config.json").write_text(json.dumps(cfg))
    return ["cache", "--out", str(t / "c"), "--device", "cpu", f"data.root={w['data']}", f"vae.path={folder}"]


def _truncated_compensation(w, t):
    path = _truncated(t / "comp.safetensors", (w["vae"] / WEIGHTS_NAME).read_bytes())
    return ["cache", "--out", str(t / "c"), "--device", "cpu", f"data.root={w['data']}", f"vae.path={w['vae']}",
            f"vae.compensation={path}"]


def _truncated_dino(w, t):
    path = _truncated(t / "dino.safetensors", (w["vae"] / WEIGHTS_NAME).read_bytes())
    return ["cache", "--flow", "--out", str(t / "c"), "--device", "cpu", f"data.root={w['data']}",
            f"vae.path={w['vae']}", "flow.method=farneback", f"flow.dino_weights={path}"]


def _raft_not_raft(w, t):
    import torch

    path = t / "raft.pth"
    torch.save({"conv.weight": torch.zeros(3, 3)}, path)
    (t / "dino.pth").write_bytes(b"")   # RAFT is loaded first
    return ["cache", "--flow", "--out", str(t / "c"), "--device", "cpu", f"data.root={w['data']}",
            f"vae.path={w['vae']}", "flow.method=raft", f"flow.raft_weights={path}", f"flow.dino_weights={t / 'dino.pth'}"]


def _meta_edit(edit):
    def build(w, t):
        ckpt = t / "ckpt"
        shutil.copytree(w["ckpt"], ckpt)
        meta = json.loads((ckpt / "meta.json").read_text())
        (ckpt / "meta.json").write_text(json.dumps(edit(meta)))
        return ["sample", str(ckpt), "--out", str(t / "s"), "--num", "1"]
    return build


def _manifest(text: bytes):
    def build(w, t):
        (t / "cache").mkdir()
        (t / "cache" / "manifest.json").write_bytes(text)
        return ["train", "--cache", str(t / "cache"), "--run-dir", str(t / "run"), "--preset", "tiny",
                f"data.root={w['data']}"]
    return build


def _config_file(text: bytes):
    def build(w, t):
        (t / "cfg.yaml").write_bytes(text)
        return ["config", "show", "--config", str(t / "cfg.yaml")]
    return build


CASES = {
    # overrides that YAML would mis-type or fail on: taken as the string written where the schema says string
    "root=2024_01": (lambda w, t: ["config", "show", "tiny", "data.root=2024_01"], 0, ["root: '2024_01'"]),
    "root=yes": (lambda w, t: ["config", "show", "tiny", "data.root=yes"], 0, ["root: 'yes'"]),
    "root=x #1": (lambda w, t: ["config", "show", "tiny", "data.root=x #1"], 0, ["root: 'x #1'"]),
    "root=@data": (lambda w, t: ["config", "show", "tiny", "data.root=@data"], 0, ["root: '@data'"]),
    "root=*videos": (lambda w, t: ["config", "show", "tiny", "data.root=*videos"], 0, ["root: '*videos'"]),
    'root="[unclosed"': (lambda w, t: ["config", "show", "tiny", 'data.root="[unclosed"'], 0, ["[unclosed"]),
    "root='it (unmatched quote)": (lambda w, t: ["config", "show", "tiny", "data.root='it"], 0, ["'it"]),
    # values the model cannot use: refused by key before anything runs
    "attn_heads=0": (lambda w, t: ["model", "summary", "tiny", "model.attn_heads=0"], 2, ["model.attn_heads"]),
    "attn_heads=-2": (lambda w, t: ["model", "summary", "tiny", "model.attn_heads=-2"], 2, ["model.attn_heads"]),
    "headdim=0": (lambda w, t: ["model", "summary", "tiny", "model.headdim=0"], 2, ["model.headdim"]),
    "seed=-1": (lambda w, t: ["config", "show", "tiny", "train.seed=-1"], 2, ["train.seed"]),
    "depth=12 #deep": (lambda w, t: ["config", "show", "tiny", "model.depth=12 #deep"], 2, ["model.depth"]),
    "unknown key": (lambda w, t: ["config", "show", "tiny", "model.dpeth=3"], 2, ["model.dpeth"]),
    # config files
    "config not UTF-8": (_config_file("data:\n  root: /données\n".encode("latin-1")), 2,
                         ["cfg.yaml", "not UTF-8", "save it as UTF-8"]),
    "config billion laughs": (_config_file(BILLION_LAUGHS.encode()), 2, ["cfg.yaml", "anchors and aliases"]),
    "config syntax error": (_config_file(b"data:\n  root: [x\n  size: 64\n"), 2, ["cfg.yaml", "line 3"]),
    "config missing": (lambda w, t: ["config", "show", "--config", str(t / "none.yaml")], 2, ["none.yaml"]),
    # weight files
    "VAE folder with 1 tensor": (_vae_one_tensor, 2, [WEIGHTS_NAME, "tensors missing"]),
    "VAE config.json with one block": (_vae_one_block, 2, ["vaeb"]),
    "truncated compensation": (_truncated_compensation, 2, ["comp.safetensors"]),
    "truncated DINO weights": (_truncated_dino, 2, ["dino.safetensors"]),
    "RAFT file that is not RAFT": (_raft_not_raft, 2, ["raft.pth"]),
    # checkpoints and caches
    "meta.json step a string": (_meta_edit(lambda m: {**m, "step": "3"}), 2, ["meta.json"]),
    "meta.json step missing": (_meta_edit(lambda m: {k: v for k, v in m.items() if k != "step"}), 2, ["meta.json"]),
    "manifest without shards": (_manifest(b'{"version": 2}'), 2, ["manifest.json"]),
    "manifest not UTF-8": (_manifest(b'{"version": 2, "root": "\xff\xfe"}'), 2, ["manifest.json"]),
    "manifest not JSON": (_manifest(b'{"version": 2, "sha'), 2, ["manifest.json"]),
    "no cache at all": (lambda w, t: ["train", "--cache", str(t / "none"), "--run-dir", str(t / "run")], 2,
                        ["run `medsora cache` first"]),
    # data and evaluation
    "empty data folder": (lambda w, t: (t / "empty").mkdir() or ["data", "check", str(t / "empty")], 1,
                          ["nothing usable"]),
    "eval --real-stride 0": (lambda w, t: ["eval", "--real", str(w["data"]), "--fake", str(w["data"]),
                                           "--real-stride", "0"], 2, ["--real-stride"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_hostile_case_gives_a_result_or_one_line(case, world, tmp_path, capsys):
    build, code, words = CASES[case]
    argv = build(world, tmp_path)
    assert main(argv) == code, (case, capsys.readouterr())
    out = capsys.readouterr()
    text = out.out + out.err
    assert "Traceback" not in text, text
    if code == 2:
        last = out.err.replace("\r", "\n").strip().splitlines()[-1]   # below any progress bar or warning
        assert last.startswith("error: ") and len(last) < 600, last
        text = last
    for word in words:
        assert word in text, (case, word, text)
