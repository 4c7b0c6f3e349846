"""The one-command demo end to end at a minimal scale, and the report for a run folder."""
import json

from medsora.cli import main


def test_demo_end_to_end_and_resume(tmp_path, capsys):
    out = tmp_path / "demo"
    args = ["demo", "--out", str(out), "--videos", "6", "--frames", "40", "--vae-steps", "2", "--train-steps", "4", "--samples", "2",
            "data.num_frames=8", "train.eval_every=2", "diffusion.sample_steps=3"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "report:" in printed and str(out / "report.html") in printed
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["timings"]) >= {"data", "vae", "cache", "train", "sample", "reconstruct", "first-frame", "metrics",
                                       "total"}
    assert [s for s, _ in summary["eval_mse"]][0] == 0 and summary["eval_mse"][-1][0] == 4
    # no DINO weights here: alignment runs with the weight-free features, and says so
    assert any("alignment was ON with weight-free flow-patch features, NOT the paper's" in n for n in summary["notes"])
    assert json.loads((out / "run" / "alignment.json").read_text())["align"] is True
    assert [t["target"].split()[0] for t in summary["targets"]] == ["VAE", "VAE", "generated", "generated", "generated"]
    assert all(isinstance(t["met"], bool) and t["measured"] for t in summary["targets"])
    assert "targets met:" in printed and "weight-free, NOT the paper" in (out / "report.html").read_text()
    page = (out / "report.html").read_text()
    for needle in ("Real and generated clips", "Training", "Metrics", "not computed", "Generated vs real", "Timings",
                   "real through the VAE", "a gap between them and the generated clips the model's", "Targets",
                   "Optical-flow alignment"):
        assert needle in page, needle
    assert len(list((out / "samples").glob("*.mp4"))) == 2 and len(list((out / "reconstructions").glob("*.mp4"))) == 2
    assert set(json.loads((out / "clip_stats.json").read_text())) == {"real", "vae_reconstructed", "generated"}
    # issue #18 (beyond the paper): the model trains with model.first_frame; two image-conditioned samples beside
    # their frames and one long video of 3 clips (8 + 7 + 7 frames), each figure from this run's files
    assert json.loads((out / "run" / "alignment.json").read_text()) and "first_frame: true" in (
        out / "run" / "config.yaml").read_text()
    assert len(list((out / "i2v").glob("*.mp4"))) == 2 and len(list((out / "first_frames").glob("*.png"))) == 2
    from medsora.data.video import probe

    assert probe(next((out / "long").glob("*.mp4"))).num_frames == 22
    ff = summary["first_frame"]
    assert ff["fit"]["videos"] == 2 and ff["continuity"]["boundaries"] == 2
    assert [r["met"] for r in ff["rows"]] == [ff["fit"]["gap"] <= 1, ff["continuity"]["ratio"] <= 1.5]
    assert "From a given first frame" in page and "(beyond the paper)" in printed
    for name in ("i2v_0.png", "i2v_1.gif", "long_0.gif", "long_0.png"):
        assert name in page and (out / "report_assets" / name).exists(), name
    import re

    refs = re.findall(r"src='([^']+)'", page)                    # every image the report shows is a file of this run
    assert len(refs) > 20 and all((out / r).is_file() for r in refs), [r for r in refs if not (out / r).is_file()]
    # a second run skips every finished stage
    assert main(args) == 0
    assert capsys.readouterr().out.count("done already, skipped") == 8


def test_report_of_a_plain_run(tmp_path):
    (tmp_path / "config.yaml").write_text("data:\n  root: ''\n")
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "loss": 1.0, "mse": 0.9, "vb": 0.1, "align": 0.0}\n'
                                            '{"step": 1, "eval_mse": 0.8}\n')
    assert main(["report", str(tmp_path)]) == 0
    page = (tmp_path / "report.html").read_text()
    assert "Training" in page and (tmp_path / "report_assets" / "loss.png").exists()


def test_demo_lpips_trunk_turns_on_the_papers_whole_compensation_loss(tmp_path, capsys, monkeypatch):
    """--lpips-trunk: the compensation modules train with L1 + LPIPS + 0.1 FFL on that VGG16 file (Eq. 16); a missing
    file is one line before any work; without it LPIPS is off and the run says so."""
    import medsora.vae.perceptual as perceptual
    from medsora.demo import compensation_loss_note, demo_compensation_config
    from medsora.vae.autoencoder import VideoVAE
    from medsora.vae.train import train_compensation
    from test_vae_train import moving_clips

    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--lpips-trunk", str(tmp_path / "vgg16.pth")]) != 0
    err = capsys.readouterr().err.strip()
    assert "vgg16.pth: no such file" in err and "\n" not in err and not out.exists()

    off, on = demo_compensation_config(3, 0), demo_compensation_config(3, 0, str(tmp_path / "vgg16.pth"))
    assert off.lpips_weight == 0 and "LPIPS is off" in compensation_loss_note(off)
    assert (on.lpips_weight, on.lpips_net, on.ffl_weight, on.l1_weight) == (1.0, "vgg", 0.1, 1.0)
    assert "Eq. 16" in compensation_loss_note(on)
    calls = []
    real_loader = perceptual.load_lpips

    def fake_loader(net, trunk):                         # no VGG16 weights here: a random LPIPS stands in
        calls.append((net, trunk))
        return real_loader("alex", pretrained=False)

    monkeypatch.setattr(perceptual, "load_lpips", fake_loader)
    vae = VideoVAE.tiny(seed=0)
    log = train_compensation(vae, list(moving_clips(2, t=8, size=32).split(1)), on, tmp_path / "vae", progress=False)
    assert calls == [("vgg", str(tmp_path / "vgg16.pth"))] and all("lpips" in r for r in log["losses"])


def test_demo_targets_thresholds_and_the_jitter_beside_each_motion():
    from medsora.demo_targets import demo_targets
    real = {"motion": 4.0, "rgb_mean": [150, 60, 50], "sharpness": 300.0, "flow_jitter": 0.25}
    good = {"motion": 3.2, "rgb_mean": [157, 53, 50], "sharpness": 180.0, "flow_jitter": 0.3}
    rows = demo_targets({"real": real, "real through the VAE": good, "generated": good}, 30.0)
    assert [r["met"] for r in rows] == [True] * 5
    assert "flow jitter 0.30 vs 0.25 px" in rows[1]["measured"] and "flow jitter" in rows[2]["measured"]
    bad = {"motion": 5.1, "rgb_mean": [158.5, 60, 50], "sharpness": 179.0, "flow_jitter": 0.9}
    rows = demo_targets({"real": real, "real through the VAE": {**good, "motion": 3.1}, "generated": bad}, 29.9)
    assert [r["met"] for r in rows] == [False] * 5
