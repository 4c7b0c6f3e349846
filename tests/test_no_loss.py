"""Nothing lost: a run folder has one writer, `--resume auto` never replaces checkpoints it could not verify,
and `sample` never mixes its videos with another run's. Each test fails on the code before these guards."""
import json

import pytest
import torch
from safetensors.torch import load_file

from medsora.cache import build_cache
from medsora.checkpoint import list_checkpoints
from medsora.config import load_config
from medsora.runlock import LockedError, folder_lock
from medsora.sample import sample
from medsora.train import TrainError, train


def cfg_of(root, *extra):
    return load_config("tiny", overrides=[f"data.root={root}", "data.num_frames=8", "data.frame_stride=2",
                                          "data.clip_offsets=1", "train.align=false", "train.batch_size=4",
                                          "train.ckpt_every=1", "train.max_steps=2", *extra])


@pytest.fixture(scope="module")
def run(synth_mp4, vae, tmp_path_factory):
    """A cache and a 2-step run with two checkpoints."""
    root = tmp_path_factory.mktemp("noloss")
    build_cache(cfg_of(synth_mp4), vae, root / "cache", progress=False)
    train(cfg_of(synth_mp4), root / "cache", root / "run", progress=False)
    return root


def _sigint_default():
    """In the child: Ctrl-C as a terminal delivers it. A shell without job control starts background commands with
    SIGINT ignored (POSIX), and a Python started so never raises KeyboardInterrupt: CI may run us that way."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def files_of(folder):
    return {p: p.read_bytes() for p in folder.rglob("*") if p.is_file() and p.name != ".lock"}


def test_a_second_train_into_a_busy_run_folder_is_refused(run, synth_mp4, tmp_path):
    before = files_of(run / "run")
    with folder_lock(run / "run", "train"):                      # as a `medsora train` still running there
        with pytest.raises(LockedError, match=r"in use by `medsora train` \(pid \d+"):
            train(cfg_of(synth_mp4, "train.max_steps=4"), run / "cache", run / "run", resume="auto", progress=False)
    assert files_of(run / "run") == before
    with folder_lock(run / "run", "train"):                      # released when the holder ends
        pass


def test_resume_auto_never_replaces_checkpoints_it_cannot_verify(run, synth_mp4, tmp_path):
    import shutil

    shutil.copytree(run / "run", tmp_path / "run")
    for ckpt in list_checkpoints(tmp_path / "run"):
        (ckpt / "rng.safetensors").unlink()                      # model and EMA intact
    before = files_of(tmp_path / "run")
    with pytest.raises(TrainError, match=r"none of the 2 checkpoints.*rng\.safetensors.*--resume restart"):
        train(cfg_of(synth_mp4, "train.max_steps=4"), run / "cache", tmp_path / "run", resume="auto", progress=False)
    assert files_of(tmp_path / "run") == before
    # --restart starts over and keeps the old checkpoints and log, moved aside
    out = train(cfg_of(synth_mp4), run / "cache", tmp_path / "run", resume="restart", progress=False)
    assert out["steps"] == 2
    kept = [p for p in (tmp_path / "run").iterdir() if p.name.startswith("previous-")]
    assert len(kept) == 1 and len(list_checkpoints(kept[0])) == 2 and (kept[0] / "metrics.jsonl").exists()
    assert sum(1 for _ in (tmp_path / "run" / "metrics.jsonl").open()) == len(
        (kept[0] / "metrics.jsonl").read_text().splitlines())     # a fresh log, not appended to the old one


def test_sample_into_another_runs_samples_is_refused(run, vae, tmp_path):
    out = tmp_path / "samples"
    sample(run / "run", vae, out, num=2, batch_size=1, steps=3, progress=False)
    before = files_of(out)
    with pytest.raises(ValueError, match="--overwrite"):
        sample(run / "run", vae, out, num=3, batch_size=1, steps=3, seed=7, progress=False)
    assert files_of(out) == before
    sample(run / "run", vae, out, num=1, batch_size=1, steps=3, seed=7, overwrite=True, progress=False)
    assert sorted(p.name for p in out.glob("sample_*.mp4")) == ["sample_000.mp4"]   # no leftovers of the old set
    meta = json.loads((out / "samples.json").read_text())
    assert meta["seed"] == 7 and meta["num"] == 1
    latents = load_file(str(out / "latents.safetensors"))["latents"]
    assert latents.shape[0] == 1 and torch.isfinite(latents).all()


def test_ctrl_c_is_one_line_and_exit_130(monkeypatch, capsys):
    from medsora import cli

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "cmd_train", interrupted)
    assert cli.main(["train", "--cache", "c", "--run-dir", "r"]) == 130
    err = capsys.readouterr().err
    assert err.strip().startswith("interrupted; rerun the same command") and "Traceback" not in err


def test_a_damaged_metrics_log_is_read_without_its_bad_lines(tmp_path, caplog):
    """A kill mid-write leaves half a line, a disk error leaves bytes that are not UTF-8: the report still reads it."""
    from medsora.report import read_jsonl

    log = tmp_path / "metrics.jsonl"
    log.write_bytes(b'{"step": 1, "loss": 0.5}\n\xff\xfe garbage\n[1, 2]\n{"step": 2, "loss": 0.4}\n{"step": 3, "lo')
    assert [r["step"] for r in read_jsonl(log)] == [1, 2]
    assert "3 unreadable lines skipped (first at line 2)" in caplog.text and str(log) in caplog.text


def test_real_ctrl_c_in_train_is_one_line_and_resumable(run, synth_mp4, tmp_path):
    """SIGINT to a running `medsora train`: exit 130, one line saying how to resume, no traceback; the run resumes."""
    import os
    import shutil
    import signal
    import subprocess
    import sys
    import time

    shutil.copytree(run / "run", tmp_path / "run")
    args = [sys.executable, "-m", "medsora.cli", "train", "--cache", str(run / "cache"), "--run-dir",
            str(tmp_path / "run"), "--resume", "auto", "--preset", "tiny", f"data.root={synth_mp4}",
            "data.num_frames=8", "data.frame_stride=2", "data.clip_offsets=1", "train.align=false",
            "train.batch_size=4", "train.ckpt_every=1", "train.max_steps=100000", "train.epochs=100000"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"}, preexec_fn=_sigint_default)
    metrics = tmp_path / "run" / "metrics.jsonl"
    start, lines = time.time(), len(metrics.read_text().splitlines())
    while len(metrics.read_text().splitlines()) < lines + 2 and time.time() - start < 120:   # training is under way
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err, err[-2000:]
    lines = err.replace("\r", "\n").splitlines()                   # progress bars redraw with \r
    assert any(line.startswith("interrupted; rerun the same command") for line in lines), err[-2000:]
    assert list_checkpoints(tmp_path / "run")                     # what was written is intact: resumable


def test_a_second_cache_into_a_busy_cache_folder_is_refused(run, synth_mp4, vae, tmp_path):
    before = files_of(run / "cache")
    with folder_lock(run / "cache", "cache"):                    # as a `medsora cache` still encoding there
        with pytest.raises(LockedError, match=r"in use by `medsora cache` \(pid \d+"):
            build_cache(cfg_of(synth_mp4), vae, run / "cache", progress=False)
    assert files_of(run / "cache") == before
    with folder_lock(tmp_path / "new", "cache"):
        with pytest.raises(LockedError):
            build_cache(cfg_of(synth_mp4), vae, tmp_path / "new", progress=False)
    assert [p.name for p in (tmp_path / "new").iterdir()] == [".lock"]   # the holder's folder, untouched


def test_real_ctrl_c_in_cache_is_one_line_and_the_rerun_completes(vae, tmp_path):
    """SIGINT to a running `medsora cache`: exit 130, one line, no traceback; rerunning finishes the cache with
    the shards written before the interrupt kept."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from medsora.data.synth import write_dataset

    write_dataset(tmp_path / "data", videos=3, seed=1, frames=160, size=64, fmt="mp4")
    vae.save_pretrained(tmp_path / "vae")
    args = [sys.executable, "-m", "medsora.cli", "cache", "--out", str(tmp_path / "cache"), "--shard-size", "1",
            "--device", "cpu", "--preset", "tiny", f"data.root={tmp_path / 'data'}", f"vae.path={tmp_path / 'vae'}",
            "data.num_frames=8", "data.frame_stride=1", "data.clip_offsets=4"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=_sigint_default)
    start = time.time()
    while len(list((tmp_path / "cache").glob("shard-*.safetensors"))) < 2 and time.time() - start < 120:
        time.sleep(0.1)                                            # encoding is under way
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err, err[-2000:]
    assert any(line.startswith("interrupted; rerun the same command")
               for line in err.replace("\r", "\n").splitlines()), err[-2000:]
    kept = {p.name: p.read_bytes() for p in (tmp_path / "cache").glob("shard-*.safetensors")}
    assert kept and not list((tmp_path / "cache").glob("*.tmp"))   # whole shards only
    done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    manifest = json.loads((tmp_path / "cache" / "manifest.json").read_text())
    assert len(manifest["shards"]) == manifest["num_clips"] > len(kept)
    assert all((tmp_path / "cache" / name).read_bytes() == data for name, data in kept.items())   # not redone
