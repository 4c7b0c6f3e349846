"""The downstream test (Table 4): labels CSVs and their errors, the classifier, FixMatch's masked loss, F1 against
torchmetrics, resume = an uninterrupted run, the CLI's one-line errors, and synth's balanced labels."""
import json

import numpy as np
import pytest
import torch
from torchmetrics.functional.classification import multiclass_f1_score

from medsora.cli import main
from medsora.data.synth import make_video, write_dataset
from medsora.downstream import classifier, run
from medsora.downstream.classifier import ClassifierError, build_classifier, to_input
from medsora.downstream.fixmatch import augment_batch, fixmatch_loss, strong_augment, weak_augment
from medsora.downstream.labels import LabelsError, class_names, encode, list_unlabeled, read_labels
from medsora.downstream.run import DownstreamConfig, DownstreamError, f1_scores, train_run, train_step

TINY = DownstreamConfig(frames=2, stride=1, size=16, epochs=2, batch_size=4, mu=1)


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    """Train / test sets (6 and 4 labelled frame folders) and 4 unlabeled videos, 3 frames at 24 px."""
    root = tmp_path_factory.mktemp("downstream")
    write_dataset(root / "train", videos=6, seed=1, frames=3, size=24, fmt="frames", labels=True)
    write_dataset(root / "test", videos=4, seed=2, frames=3, size=24, fmt="frames", labels=True)
    write_dataset(root / "unl", videos=4, seed=3, frames=3, size=24)
    return root


def _csv(path, text):
    path.write_text(text)
    return path


# ----------------------------------------------------------------------------------------------
# labels

def test_read_labels_header_comments_relative_paths(tmp_path):
    (tmp_path / "v").mkdir()
    (tmp_path / "v" / "a.mp4").write_bytes(b"x")
    (tmp_path / "b.mp4").write_bytes(b"x")
    csv = _csv(tmp_path / "l.csv", "path,label\n# a comment\n\nv/a.mp4,polyp\n" f"{tmp_path / 'b.mp4'}, normal\n")
    items = read_labels(csv)
    assert [(i.path, i.label, i.line) for i in items] == [(tmp_path / "v" / "a.mp4", "polyp", 4),
                                                          (tmp_path / "b.mp4", "normal", 5)]
    assert class_names(items, csv) == ["normal", "polyp"]
    assert encode(items, ["normal", "polyp"], csv) == [1, 0]


def test_missing_file_names_csv_line_and_path(tmp_path):
    (tmp_path / "a.mp4").write_bytes(b"x")
    csv = _csv(tmp_path / "train.csv", "a.mp4,polyp\nnope/b.mp4,normal\n")
    with pytest.raises(LabelsError, match=r"train\.csv line 2: nope/b\.mp4 does not exist"):
        read_labels(csv)


@pytest.mark.parametrize("text,match", [("a.mp4\n", "line 1: expected 'path,label'"),
                                        ("a.mp4,x,y\n", "line 1: expected"), ("path,label\n", "lists no videos")])
def test_malformed_csv(tmp_path, text, match):
    (tmp_path / "a.mp4").write_bytes(b"x")
    with pytest.raises(LabelsError, match=match):
        read_labels(_csv(tmp_path / "l.csv", text))


def test_one_class_and_unknown_label(tmp_path):
    (tmp_path / "a.mp4").write_bytes(b"x")
    train = read_labels(_csv(tmp_path / "train.csv", "a.mp4,polyp\na.mp4,polyp\n"))
    with pytest.raises(LabelsError, match="every training video is labelled 'polyp'"):
        class_names(train, tmp_path / "train.csv")
    test = read_labels(_csv(tmp_path / "test.csv", "a.mp4,polyp\na.mp4,adenoma\n"))
    with pytest.raises(LabelsError, match=r"test\.csv line 2: label 'adenoma' is not among the training labels"):
        encode(test, ["normal", "polyp"], tmp_path / "test.csv")


def test_empty_unlabeled_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("no videos here")
    with pytest.raises(LabelsError, match="holds no videos"):
        list_unlabeled(tmp_path)


# ----------------------------------------------------------------------------------------------
# synth labels

def test_synth_labels_are_balanced_and_force_polyps(tmp_path):
    write_dataset(tmp_path, videos=4, seed=0, frames=2, size=32, fmt="frames", labels=True)
    lines = (tmp_path / "labels.csv").read_text().splitlines()
    assert lines == ["path,label", "video_000,polyp", "video_001,normal", "video_002,polyp", "video_003,normal"]
    from medsora.data.synth import make_scene

    for seed in range(6):   # forced presence / absence, whatever the seed draws
        assert len(make_scene(np.random.default_rng(seed), 32, polyp=True).polyps) >= 1
        assert make_scene(np.random.default_rng(seed), 32, polyp=False).polyps == []


def test_synth_forcing_leaves_the_rest_of_the_scene():
    # the canvas is drawn before the polyp count is forced: a seed that drew no polyp gives the identical video with
    # polyp=False, and polyp=True only adds a (larger, more central) polyp to that same canvas
    from medsora.data import synth

    drawn = [len(synth.make_scene(np.random.default_rng(s), 32).polyps) for s in range(8)]
    without = drawn.index(0)
    assert max(drawn) >= 1
    assert np.array_equal(make_video(without, 2, 32), make_video(without, 2, 32, polyp=False))
    a = synth.make_scene(np.random.default_rng(without), 32, polyp=False)
    b = synth.make_scene(np.random.default_rng(without), 32, polyp=True)
    (cx, cy, r), = b.polyps
    n = b.canvas.shape[0]
    assert 0.12 * 32 * synth.FORCED_POLYP_SCALE <= r <= 0.25 * 32 * synth.FORCED_POLYP_SCALE
    assert max(abs(cx - n / 2), abs(cy - n / 2)) <= 0.3 * 32 * synth.FORCED_POLYP_SHIFT
    far = np.hypot(*np.meshgrid(np.arange(n) - cx, np.arange(n) - cy)) > 3 * r   # the dome is ~0 beyond 1.5 r
    assert far.sum() > 0.5 * n * n and np.abs(a.canvas[far] - b.canvas[far]).max() < 1e-4
    assert np.abs(a.canvas - b.canvas).max() > 0.1                                   # ... and the polyp is there


# ----------------------------------------------------------------------------------------------
# classifier, augmentations, loss

def test_classifier_step_changes_weights_and_lowers_loss():
    torch.manual_seed(0)
    model = build_classifier("tiny", 2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    x, y = torch.randn(4, 3, 2, 16, 16), torch.tensor([0, 1, 0, 1])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    logs = [train_step(model, opt, x, y) for _ in range(5)]
    changed = [k for k, v in model.state_dict().items() if v.dtype.is_floating_point and not torch.equal(v, before[k])]
    assert "fc.weight" in changed and "stem.0.weight" in changed
    assert logs[-1]["loss_x"] < logs[0]["loss_x"]


def test_weights_file_loads_and_mismatch_is_one_line(tmp_path):
    torch.manual_seed(1)
    src = build_classifier("tiny", 5)      # another head: replaced by a fresh 2-class one, the rest loaded
    torch.save(src.state_dict(), tmp_path / "w.pth")
    model = build_classifier("tiny", 2, tmp_path / "w.pth")
    assert torch.equal(model.stem[0].weight, src.stem[0].weight) and model.fc.weight.shape == (2, 128)
    torch.save(build_classifier("mc3_18", 2).state_dict(), tmp_path / "other.pth")
    with pytest.raises(ClassifierError, match=r"do not fit --arch tiny: .*") as e:
        build_classifier("tiny", 2, tmp_path / "other.pth")
    assert "\n" not in str(e.value)


def test_to_input_layout_and_normalisation():
    clips = torch.full((1, 2, 3, 4, 4), 255, dtype=torch.uint8)
    x = to_input(clips)
    assert x.shape == (1, 3, 2, 4, 4)
    expect = (1 - torch.tensor(classifier.KINETICS_MEAN)) / torch.tensor(classifier.KINETICS_STD)
    assert torch.allclose(x[0, :, 0, 0, 0], expect)


def test_augmentations_keep_shape_and_are_the_same_for_every_frame():
    torch.manual_seed(0)
    frame = torch.randint(0, 256, (1, 1, 3, 24, 24), dtype=torch.uint8)
    clips = frame.repeat(3, 4, 1, 1, 1)                     # 3 clips of 4 identical frames
    for t in (weak_augment(), strong_augment()):
        out = augment_batch(clips, t)
        assert out.shape == clips.shape and out.dtype == torch.uint8
        assert torch.equal(out, out[:, :1].expand_as(out))   # one draw per clip, all frames alike
    assert not torch.equal(augment_batch(clips, strong_augment()), clips)


def test_fixmatch_loss_masks_low_confidence():
    weak = torch.tensor([[2.0, 0.0], [0.0, 0.1]])          # confidences 0.881 and 0.525
    strong = torch.tensor([[0.5, 0.2], [0.3, 0.9]], requires_grad=True)
    loss, mask = fixmatch_loss(weak, strong, threshold=0.95)  # none confident: zero loss, zero gradient
    loss.backward()
    assert mask.tolist() == [0.0, 0.0] and loss.item() == 0.0 and torch.count_nonzero(strong.grad) == 0
    strong.grad = None
    loss, mask = fixmatch_loss(weak, strong, threshold=0.8)   # only the first clip, with pseudo-label 0
    loss.backward()
    expect = torch.nn.functional.cross_entropy(strong[:1].detach(), torch.tensor([0])) / 2
    assert mask.tolist() == [1.0, 0.0] and torch.isclose(loss, expect)
    assert torch.count_nonzero(strong.grad[0]) == 2 and torch.count_nonzero(strong.grad[1]) == 0


def test_unlabeled_part_gives_no_gradient_below_threshold():
    """In a whole train_step: with threshold > 1 the unlabeled clips change nothing (same weights as without them
    only when BN sees the same batch, so compare the loss terms and gradients of the unlabeled part instead)."""
    torch.manual_seed(0)
    model = build_classifier("tiny", 2)
    x, y, u = torch.randn(2, 3, 2, 16, 16), torch.tensor([0, 1]), torch.randn(2, 3, 2, 16, 16)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    off = train_step(model, opt, x, y, u, u + 0.1, threshold=1.01)
    on = train_step(model, opt, x, y, u, u + 0.1, threshold=0.0)
    assert off["loss_u"] == 0.0 and off["mask_rate"] == 0.0
    assert on["loss_u"] > 0.0 and on["mask_rate"] == 1.0


def test_f1_matches_torchmetrics():
    g = torch.Generator().manual_seed(0)
    for k in (2, 3):
        pred, target = torch.randint(0, k, (50,), generator=g), torch.randint(0, k, (50,), generator=g)
        macro, per = f1_scores(pred, target, k)
        assert macro == pytest.approx(multiclass_f1_score(pred, target, k, average="macro").item(), abs=1e-6)
        assert per == pytest.approx(multiclass_f1_score(pred, target, k, average="none").tolist(), abs=1e-6)


# ----------------------------------------------------------------------------------------------
# runs: resume, results, CLI

def test_resume_equals_uninterrupted(sets, tmp_path, monkeypatch):
    data, classes = run.prepare_data(sets / "train" / "labels.csv", sets / "test" / "labels.csv", sets / "unl", TINY)
    full = train_run(tmp_path / "full", data, classes, TINY, seed=0, semi=True)
    real_save = run.save_checkpoint

    def save_then_die(*a, **kw):                # a kill right after the first epoch's checkpoint
        real_save(*a, **kw)
        raise KeyboardInterrupt

    monkeypatch.setattr(run, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train_run(tmp_path / "cut", data, classes, TINY, seed=0, semi=True)
    monkeypatch.setattr(run, "save_checkpoint", real_save)
    resumed = train_run(tmp_path / "cut", data, classes, TINY, seed=0, semi=True)
    from safetensors.torch import load_file

    a = load_file(tmp_path / "full" / "checkpoints" / "step-00000002" / "model.safetensors")
    b = load_file(tmp_path / "cut" / "checkpoints" / "step-00000002" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    for key in ("f1_macro", "accuracy", "f1_per_class"):
        assert resumed[key] == full[key]
    assert [h["loss"] for h in resumed["history"]] == [h["loss"] for h in full["history"]]
    with pytest.raises(DownstreamError, match="other settings"):   # the same folder, other settings: refused
        train_run(tmp_path / "full", data, classes, DownstreamConfig(**{**TINY.__dict__, "epochs": 3}), 0, True)


def test_cli_runs_and_writes_table(sets, tmp_path, capsys):
    rc = main(["downstream", "--train", str(sets / "train" / "labels.csv"), "--test", str(sets / "test" / "labels.csv"),
               "--unlabeled", str(sets / "unl"), "--out", str(tmp_path / "o"), "--frames", "2", "--stride", "1",
               "--size", "16", "--epochs", "1", "--batch-size", "4", "--seeds", "0", "1", "--device", "cpu"])
    assert rc == 0
    res = json.loads((tmp_path / "o" / "results.json").read_text())
    assert res["classes"] == ["normal", "polyp"] and res["n_unlabeled"] == 4 and res["f1"].startswith("macro F1")
    assert [r["seed"] for r in res["runs"]["semi"]] == [0, 1] and len(res["runs"]["supervised"]) == 2
    table = (tmp_path / "o" / "table.md").read_text().splitlines()
    assert table[2].startswith("| Supervised-only |") and table[3].startswith("| + 4 unlabeled")
    assert "Supervised-only" in capsys.readouterr().out


def _cli_error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err          # progress bars (cleared with \r) may come before the error line
    assert err.count("error: ") == 1 and "Traceback" not in err
    line = err[err.index("error: "):]
    assert line.endswith("\n") and line.count("\n") == 1 and "\r" not in line
    return line


def test_cli_errors_are_one_line(sets, tmp_path, capsys):
    train, test = str(sets / "train" / "labels.csv"), str(sets / "test" / "labels.csv")
    base = ["downstream", "--out", str(tmp_path / "o"), "--frames", "2", "--stride", "1", "--size", "16"]
    bad = _csv(tmp_path / "bad.csv", f"{sets / 'train' / 'video_000'},polyp\nmissing/v.mp4,normal\n")
    assert "bad.csv line 2: missing/v.mp4 does not exist" in _cli_error(capsys, [*base, "--train", str(bad),
                                                                                 "--test", test])
    one = _csv(tmp_path / "one.csv", f"{sets / 'train' / 'video_000'},polyp\n{sets / 'train' / 'video_002'},polyp\n")
    assert "every training video is labelled 'polyp'" in _cli_error(capsys, [*base, "--train", str(one),
                                                                            "--test", test])
    unk = _csv(tmp_path / "unk.csv", f"{sets / 'test' / 'video_000'},adenoma\n")
    assert "unk.csv line 1: label 'adenoma'" in _cli_error(capsys, [*base, "--train", train, "--test", str(unk)])
    (tmp_path / "empty").mkdir()
    assert "holds no videos" in _cli_error(capsys, [*base, "--train", train, "--test", test,
                                                     "--unlabeled", str(tmp_path / "empty")])
    assert "shorter than one clip" in _cli_error(capsys, [*base[:3], "--frames", "8", "--stride", "2",
                                                           "--train", train, "--test", test])
    (tmp_path / "junk.pth").write_bytes(b"not a state dict")
    assert "junk.pth: not a readable state dict" in _cli_error(capsys, [*base, "--train", train, "--test", test,
                                                                         "--weights", str(tmp_path / "junk.pth")])
