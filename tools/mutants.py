"""Hand-written mutants of the method: does a behaviour-changing bug in each part make some test fail?

Why hand-written and not mutmut: a syntax-blind mutator makes thousands of mutants, most of them equivalent or
trivially caught by a crash, and runs the suite for each (hours on 2 cores). Each mutant here is one bug that a
wrong reimplementation of the paper could plausibly contain, with the tests that should catch it.

    python tools/mutants.py                 # all mutants, writes benchmarks/results/mutants.md
    python tools/mutants.py --list          # names and what they change
    python tools/mutants.py --only NAME[,NAME...]   # some of them (the results file is then not written unless --write)
    python tools/mutants.py --baseline      # first check the listed tests pass on the unmutated copy

Each mutant: the package and tests (git ls-files, tracked and untracked-not-ignored) are copied to a temporary
folder, the mutant's old text (which must occur exactly once in its file) is replaced, and pytest runs the listed
tests there with `-x -q -p no:cacheprovider` (OMP_NUM_THREADS=1). Killed = pytest exit status other than 0.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "mutants.md"


@dataclass(frozen=True)
class Mutant:
    name: str
    file: str
    old: str
    new: str
    tests: tuple[str, ...]
    what: str


M = Mutant
MUTANTS: list[Mutant] = [
    # ---------------------------------------------------------------- training
    M("ema-decay-swapped", "medsora/train.py",
      "e.lerp_(p.detach(), 1.0 - decay)", "e.lerp_(p.detach(), decay)",
      ("tests/test_method_refs.py::test_ema_is_the_hand_computed_average",),
      "EMA weight decay and 1 - decay swapped (the EMA follows the model)"),
    M("ema-buffers-not-copied", "medsora/train.py",
      "    for e, b in zip(ema.buffers(), model.buffers()):\n        e.copy_(b)\n", "",
      ("tests/test_method_refs.py::test_ema_is_the_hand_computed_average",),
      "EMA model's buffers never copied from the model"),
    # ---------------------------------------------------------------- backbone
    M("temporal-scans-tokens-of-a-frame", "medsora/models/blocks.py",
      'y = self.mamba(rearrange(x, "n f l d -> (n l) f d"))\n        return rearrange(y, "(n l) f d -> n f l d", n=n)',
      'y = self.mamba(rearrange(x, "n f l d -> (n f) l d"))\n        return rearrange(y, "(n f) l d -> n f l d", n=n)',
      ("tests/test_method_refs.py::test_temporal_mamba_scans_each_token_across_frames",
       "tests/test_method_refs.py::test_temporal_mamba_is_causal_in_the_frame_axis"),
      "temporal Mamba scans the l tokens of each frame instead of each token across the frames"),
    M("adaln-gates-spatial-temporal-swapped", "medsora/models/blocks.py",
      "x = x + gate_s * self.spatial(", "x = x + gate_t * self.spatial(",
      ("tests/test_method_refs.py::test_block_with_random_adaln_is_the_papers_residual_sequence",),
      "spatial sub-layer gated by the temporal sub-layer's adaLN gate"),
    M("adaln-shift-scale-swapped", "medsora/models/blocks.py",
      "self.spatial(modulate(self.norm2(x), shift_s, scale_s)", "self.spatial(modulate(self.norm2(x), scale_s, shift_s)",
      ("tests/test_method_refs.py::test_block_with_random_adaln_is_the_papers_residual_sequence",),
      "spatial sub-layer's adaLN shift and scale swapped"),
    M("alignment-feature-after-temporal", "medsora/models/blocks.py",
      "        feature = x\n        x = x + gate_t * self.temporal(modulate(self.norm3(x), shift_t, scale_t), num_video_frames)\n",
      "        x = x + gate_t * self.temporal(modulate(self.norm3(x), shift_t, scale_t), num_video_frames)\n"
      "        feature = x\n",
      ("tests/test_method_refs.py::test_block_with_random_adaln_is_the_papers_residual_sequence",),
      "alignment feature taken after the temporal sub-layer instead of after the spatial one"),
    M("blocks-are-identity", "medsora/models/medsora.py",
      "            h, feature = block(h, c, fv, grid)\n", "            feature = h\n",
      ("tests/test_backbone.py::test_every_parameter_learns_from_the_initialisation",),
      "every MedSora block skipped (identity)"),
    M("eq9-minus", "medsora/models/blocks.py",
      "torch.sigmoid(self.gate_w(y_w)) * y_w + torch.sigmoid(self.gate_h(y_h)) * y_h",
      "torch.sigmoid(self.gate_w(y_w)) * y_w - torch.sigmoid(self.gate_h(y_h)) * y_h",
      ("tests/test_method_refs.py::test_eq9_fusion_on_fixed_numbers",),
      "Eq. 9: the height term subtracted"),
    M("eq9-no-gate", "medsora/models/blocks.py",
      "torch.sigmoid(self.gate_w(y_w)) * y_w + torch.sigmoid(self.gate_h(y_h)) * y_h",
      "y_w + y_h",
      ("tests/test_method_refs.py::test_eq9_fusion_on_fixed_numbers",),
      "Eq. 9 replaced by a plain sum (no sigmoid gates)"),
    M("eq9-gates-axes-swapped", "medsora/models/blocks.py",
      "y_w = self.mamba.out_proj(self._axis(self._width, z, num_video_frames))\n"
      "        y_h = self.mamba.out_proj(self._axis(self._height, z, num_video_frames))",
      "y_w = self.mamba.out_proj(self._axis(self._height, z, num_video_frames))\n"
      "        y_h = self.mamba.out_proj(self._axis(self._width, z, num_video_frames))",
      ("tests/test_spatial_order.py::test_each_gate_of_eq9_gates_its_own_axis",),
      "W1 gates the height planes and W2 the width planes"),
    M("spiral-reverse-not-reversed", "medsora/models/blocks.py",
      "rev = fwd.flip(0)", "rev = fwd",
      ("tests/test_spatial_order.py",),
      "the backward scan walks the spiral forwards again"),
    M("spiral-reverse-wrong-inverse", "medsora/models/blocks.py",
      "y_fwd[:, inverse(fwd)] + y_rev[:, inverse(rev)]", "y_fwd[:, inverse(fwd)] + y_rev[:, inverse(fwd)]",
      ("tests/test_spatial_order.py", "tests/test_backbone.py::test_shared_projection_equals_four_full_mamba_calls"),
      "reverse scan's outputs put back with the forward spiral's indexes"),
    M("width-plane-grid-transposed", "medsora/models/blocks.py",
      "self._scan(seq, f, w, mix)", "self._scan(seq, w, f, mix)",
      ("tests/test_spatial_order.py",),
      "width plane's spiral drawn on a w x f grid instead of f x w"),
    M("width-height-planes-swapped", "medsora/models/blocks.py",
      'seq = rearrange(z, "n f h w c -> (n h) (f w) c")              # the f×w̄ plane of each row\n'
      '        return rearrange(self._scan(seq, f, w, mix), "(n h) (f w) c -> n f (h w) c", n=n, f=f)',
      'seq = rearrange(z, "n f h w c -> (n w) (f h) c")\n'
      '        return rearrange(self._scan(seq, f, h, mix), "(n w) (f h) c -> n f (h w) c", n=n, f=f)',
      ("tests/test_spatial_order.py",),
      "the width axis scans the height planes (both axes scan columns)"),
    M("spiral-pair-ignored", "medsora/models/spiral.py",
      "_order(rows, cols, *PAIRS[pair % NUM_PAIRS])", "_order(rows, cols, *PAIRS[0])",
      ("tests/test_spatial_order.py", "tests/test_spiral.py"),
      "every block scans the same spiral (no cycling through the 8 pairs)"),
    M("spiral-ccw-not-transposed", "medsora/models/spiral.py",
      "path = [(r, c) for c, r in _clockwise(cols, rows)]", "path = _clockwise(rows, cols)[::-1]",
      ("tests/test_spatial_order.py",),
      "counter-clockwise spirals start in the centre (the clockwise one reversed)"),
    M("joint-images-join-the-video", "medsora/models/blocks.py",
      "    if num_video_frames > 0:\n        out.append(fn(x[:, :num_video_frames]))",
      "    if num_video_frames > 0:\n        return fn(x)",
      ("tests/test_backbone.py::test_images_never_reach_the_video",
       "tests/test_method_refs.py::test_temporal_mamba_scans_each_token_across_frames"),
      "joint-training images scanned as frames of the video clip"),
    M("window-attention-off-by-one", "medsora/models/attention.py",
      "(kpos <= qpos + window * forward)", "(kpos <= qpos + window * forward + 1)",
      ("tests/test_spiral.py::test_local_attention_matches_naive_loop",
       "tests/test_spiral.py::test_local_attention_is_local_and_drops_in_training"),
      "local attention sees one key too many ahead"),
    M("qkv-zero-init", "medsora/models/blocks.py",
      "    model.apply(_basic_init)\n",
      "    model.apply(_basic_init)\n    for m in model.modules():\n"
      "        if hasattr(m, 'to_q'):\n            nn.init.zeros_(m.to_q.weight), nn.init.zeros_(m.to_k.weight)\n",
      ("tests/test_backbone.py::test_every_parameter_learns_from_the_initialisation",),
      "attention q and k zero-initialised (the authors' block before their re-init)"),
    M("alignment-features-include-images", "medsora/models/medsora.py",
      "features.append(feature[:, :fv])", "features.append(feature[:, -fv:])",
      ("tests/test_method_refs.py::test_alignment_features_are_the_video_frames_only",),
      "alignment features taken from the last f_v frames (joint images included)"),
    # ---------------------------------------------------------------- diffusion
    M("vb-term-dropped", "medsora/diffusion/losses.py",
      'terms["loss"] = terms["mse"] + terms["vb"]', 'terms["loss"] = terms["mse"]',
      ("tests/test_diffusion.py::test_training_losses_match_independent_computation",),
      "learned-variance VB term left out of the loss"),
    M("beta-end-changed", "medsora/diffusion/schedule.py",
      "betas = torch.linspace(beta_start, beta_end, num_timesteps, dtype=torch.float64)",
      "betas = torch.linspace(beta_start, 2 * beta_end, num_timesteps, dtype=torch.float64)",
      ("tests/test_diffusion.py::test_schedule_tables_match_naive_loop",
       "tests/test_diffusion.py::test_ddim_matches_diffusers_step_by_step"),
      "linear beta schedule ends at 0.04 instead of 0.02"),
    M("beta-config-default", "medsora/config.py",
      "beta_end: float = 0.02", "beta_end: float = 0.01",
      ("tests/test_config.py",),
      "config's default beta_end 0.01"),
    M("ddim-eta-ignored", "medsora/diffusion/samplers.py",
      "sigma = eta * ((1 - ab_prev) / (1 - ab)).sqrt()", "sigma = 0.0 * ((1 - ab_prev) / (1 - ab)).sqrt()",
      ("tests/test_diffusion.py::test_ddim_eta1_equals_ddpm_with_posterior_variance",
       "tests/test_diffusion.py::test_ddim_matches_diffusers_step_by_step"),
      "DDIM's eta has no effect on sigma"),
    # ---------------------------------------------------------------- alignment (Sec. 3.2)
    M("align-g-of-t-removed", "medsora/flow/align.py",
      "g = 1.0 / (t.to(features[0].device).float() + 1.0)", "g = torch.ones_like(t.to(features[0].device).float())",
      ("tests/test_align.py",),
      "g(t) = 1 (no timestep weighting)"),
    M("align-margin-sign", "medsora/flow/align.py",
      "torch.clamp(per_sample - margin, min=0.0)", "torch.clamp(per_sample + margin, min=0.0)",
      ("tests/test_align.py",),
      "hinge margin added instead of subtracted"),
    M("align-mask-ignored", "medsora/flow/align.py",
      "    x = w * (x - (w * x).sum(dim, keepdim=True) / n)                      # masked entries become 0\n"
      "    y = w * (y - (w * y).sum(dim, keepdim=True) / n)",
      "    x = x - x.mean(dim, keepdim=True)\n    y = y - y.mean(dim, keepdim=True)",
      ("tests/test_align.py",),
      "masked frames (joint images) still counted in the correlation"),
    M("align-pearson-not-centred", "medsora/flow/align.py",
      "        x = x - x.mean(dim, keepdim=True)\n        y = y - y.mean(dim, keepdim=True)\n", "",
      ("tests/test_align.py",),
      "cosine similarity instead of Pearson (no centring)"),
    M("flow-hue-sign", "medsora/flow/flow_image.py",
      "hue = torch.atan2(v, u) * (180.0 / math.pi)", "hue = torch.atan2(-v, u) * (180.0 / math.pi)",
      ("tests/test_flow.py::test_flow_to_rgb_matches_colorsys_on_random_flow",
       "tests/test_flow.py::test_flow_to_rgb_known_directions"),
      "Eq. 13 hue measured clockwise"),
    # ---------------------------------------------------------------- VAE (Sec. 3.3)
    M("compensation-not-zero-init", "medsora/vae/compensation.py",
      "        nn.init.zeros_(self.conv_b.bias)\n", "        nn.init.constant_(self.conv_b.bias, 0.01)\n",
      ("tests/test_vae.py::test_identity_at_init_tiny",),
      "2D compensation modules not identity at init (output bias 0.01)"),
    M("compensation3d-not-zero-init", "medsora/vae/compensation.py",
      "        nn.init.zeros_(self.conv_b.conv.weight)\n", "",
      ("tests/test_vae.py::test_identity_at_init_tiny",),
      "3D compensation modules' output conv keeps its random init"),
    M("ffl-weight-1", "medsora/vae/train.py",
      "    ffl_weight: float = 0.1            # lambda of Eq. 16", "    ffl_weight: float = 1.0",
      ("tests/test_vae_train.py::test_paper_defaults",),
      "Eq. 16's lambda 1 instead of 0.1 (compensation training default)"),
    M("ffl-loss-weight-ignored", "medsora/vae/train.py",
      'total = self.l1_weight * parts["l1"] + self.ffl_weight * parts["ffl"]',
      'total = self.l1_weight * parts["l1"] + parts["ffl"]',
      ("tests/test_vae_train.py::test_reconstruction_loss_is_the_weighted_sum",),
      "the loss ignores the FFL weight"),
    M("lpips-alex", "medsora/vae/train.py",
      'lpips_net: str = "vgg"', 'lpips_net: str = "alex"',
      ("tests/test_data_claims.py::test_lpips_of_the_vae_loss_is_vgg_with_its_trunk_and_the_packages_calibration",),
      "LPIPS of Eq. 16 on AlexNet"),
    # ---------------------------------------------------------------- evaluation
    M("i3d-input-0-1", "medsora/metrics/fvd.py",
      "x = resize_frames(videos, I3D_SIZE) * (2.0 / 255.0) - 1.0", "x = resize_frames(videos, I3D_SIZE) / 255.0",
      ("tests/test_method_refs.py::test_i3d_input_is_224_frames_in_minus_one_to_one",),
      "FVD's I3D fed [0, 1] instead of [-1, 1]"),
    M("fc-bilinear", "medsora/metrics/clip_fc.py",
      "interpolation=TF.InterpolationMode.BICUBIC", "interpolation=TF.InterpolationMode.BILINEAR",
      ("tests/test_data_claims.py::test_fc_frames_are_bicubic_resized_on_the_short_side_then_centre_cropped",),
      "FC frames resized bilinearly"),
    M("fc-squash-not-crop", "medsora/metrics/clip_fc.py",
      "x = TF.resize(x, self.size,", "x = TF.resize(x, [self.size, self.size],",
      ("tests/test_data_claims.py::test_fc_frames_are_bicubic_resized_on_the_short_side_then_centre_cropped",),
      "FC frames squashed to a square instead of short side + centre crop"),
    M("real-cache-key-without-protocol", "medsora/evaluate.py",
      "key = json.dumps([m, digest, protocol, _weights_id(", "key = json.dumps([m, digest, _weights_id(",
      ("tests/test_data_claims.py::test_real_statistics_cache_key_changes_with_protocol_and_weights",),
      "real-statistics cache reused under another protocol"),
    M("real-cache-key-without-weights", "medsora/evaluate.py",
      "key = json.dumps([m, digest, protocol, _weights_id(Path(extractors[NETWORK[m]].weights))])",
      "key = json.dumps([m, digest, protocol])",
      ("tests/test_data_claims.py::test_real_statistics_cache_key_changes_with_protocol_and_weights",),
      "real-statistics cache reused with other detector weights"),
    M("weights-env-before-dir", "medsora/metrics/weights.py",
      "    dirs = [Path(weights_dir)] if weights_dir else []\n    if os.environ.get(\"MEDSORA_WEIGHTS\"):\n"
      "        dirs.append(Path(os.environ[\"MEDSORA_WEIGHTS\"]))",
      "    dirs = []\n    if os.environ.get(\"MEDSORA_WEIGHTS\"):\n        dirs.append(Path(os.environ[\"MEDSORA_WEIGHTS\"]))\n"
      "    dirs += [Path(weights_dir)] if weights_dir else []",
      ("tests/test_data_claims.py::test_metric_weights_are_looked_for_in_dir_then_env_then_cache",),
      "$MEDSORA_WEIGHTS searched before --weights DIR"),
    # ---------------------------------------------------------------- data
    M("crop-from-the-corner", "medsora/data/clips.py",
      "top, left = (h - s) // 2, (w - s) // 2", "top, left = 0, 0",
      ("tests/test_data_claims.py",),
      "crop from the top-left corner instead of the centre"),
    M("resize-squash", "medsora/data/clips.py",
      "    s = min(h, w)\n    top, left = (h - s) // 2, (w - s) // 2\n    x = x[..., top:top + s, left:left + s].float()\n"
      "    if s != size:",
      "    s = min(h, w)\n    x = x.float()\n    if True:",
      ("tests/test_data_claims.py",),
      "frames squashed to size x size (no crop)"),
    M("decode-long-side", "medsora/data/video.py",
      "k = short_side / min(w, h)", "k = short_side / max(w, h)",
      ("tests/test_data_claims.py",),
      "frames decoded with the long side at `size`"),
    M("frame-stride-ignored", "medsora/data/clips.py",
      "return [start + k * self.cfg.frame_stride for k in range(self.cfg.num_frames + 1)]",
      "return [start + k for k in range(self.cfg.num_frames + 1)]",
      ("tests/test_data_claims.py::test_frame_stride_takes_every_kth_frame",),
      "consecutive frames instead of every frame_stride-th"),
    M("index-ignores-changes", "medsora/data/index.py",
      'return ["file", st.st_size, st.st_mtime_ns]', 'return ["file"]',
      ("tests/test_data_claims.py::test_index_notices_a_rewritten_file_and_a_changed_folder",),
      "a rewritten video keeps its old index entry"),
    M("index-dir-ignored", "medsora/data/index.py",
      "    if index_dir:\n        key", "    if False:\n        key",
      ("tests/test_data_claims.py::test_index_dir_holds_the_index_and_leaves_the_data_folder_alone",),
      "data.index_dir ignored (index written into the data folder)"),
]


def _copy_tree(dst: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           check=True, capture_output=True).stdout.decode().split("\0")
    for rel in files:
        if not rel or not (rel.startswith(("medsora/", "tests/")) or rel == "pyproject.toml"):
            continue
        src = ROOT / rel
        if not src.is_file():
            continue
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst / rel)


def _pytest(workdir: Path, tests, timeout: int) -> tuple[int, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(workdir), "PYTHONDONTWRITEBYTECODE": "1"}
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
    try:
        p = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return 124, "timeout"
    lines = [ln for ln in p.stdout.splitlines() if ln.strip()]
    return p.returncode, lines[-1] if lines else p.stderr.strip()[-200:]


def _check_import(workdir: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(workdir)}
    out = subprocess.run([sys.executable, "-c", "import medsora; print(medsora.__file__)"], cwd=workdir, env=env,
                         capture_output=True, text=True, check=True).stdout.strip()
    if not out.startswith(str(workdir)):
        raise SystemExit(f"the copy's package is not the one imported ({out}); stop")


def run(mutants: list[Mutant], timeout: int, baseline: bool) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="medsora-mutants-") as tmp:
        base = Path(tmp) / "base"
        _copy_tree(base)
        _check_import(base)
        for m in mutants:
            path = base / m.file
            text = path.read_text()
            count = text.count(m.old)
            if count != 1:
                raise SystemExit(f"mutant {m.name}: old text occurs {count} times in {m.file} (want exactly 1)")
            if baseline:
                rc, tail = _pytest(base, m.tests, timeout)
                if rc != 0:
                    raise SystemExit(f"mutant {m.name}: its tests fail without the mutant: {tail}")
            work = Path(tmp) / m.name
            shutil.copytree(base, work)
            (work / m.file).write_text(text.replace(m.old, m.new))
            t0 = time.perf_counter()
            rc, tail = _pytest(work, m.tests, timeout)
            dt = time.perf_counter() - t0
            shutil.rmtree(work, ignore_errors=True)
            row = dict(name=m.name, file=m.file, what=m.what, tests=m.tests, killed=rc != 0, rc=rc, tail=tail,
                       seconds=dt)
            rows.append(row)
            print(f"{'KILLED  ' if row['killed'] else 'SURVIVED'} {m.name:40s} {dt:6.1f}s  {tail}", flush=True)
    return rows


EQUIVALENT: dict[str, str] = {}   # name -> why a surviving mutant does not change the method's behaviour


def write_results(rows: list[dict]) -> None:
    killed = sum(r["killed"] for r in rows)
    lines = [
        "# Mutation check of the method (issue 22)",
        "",
        "`python tools/mutants.py` (hand-written mutants, one behaviour-changing bug each, see the script's docstring",
        "for why not mutmut). Each row: the mutant applied to a copy of the package, the listed tests run with",
        "`pytest -x -q -p no:cacheprovider`, OMP_NUM_THREADS=1, on the shared 2-core machine (times include",
        "pytest's start-up and torch's import, ~5 s).",
        "",
        f"**{killed} of {len(rows)} killed.**",
        "",
        "| mutant | file | what it changes | tests run | killed? | seconds |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        tests = "<br>".join(f"`{t.replace('tests/', '')}`" for t in r["tests"])
        verdict = "yes" if r["killed"] else "**no**"
        lines.append(f"| `{r['name']}` | `{r['file'].replace('medsora/', '')}` | {r['what']} | {tests} | {verdict} | "
                     f"{r['seconds']:.1f} |")
    survivors = [r for r in rows if not r["killed"]]
    lines += ["", "## Survivors", ""]
    if not survivors:
        lines.append("None.")
    for r in survivors:
        lines.append(f"- `{r['name']}`: {EQUIVALENT.get(r['name'], 'not explained (a missing test)')}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines) + "\n")
    print(f"wrote {RESULTS}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--list", action="store_true", help="list the mutants and exit")
    ap.add_argument("--only", default="", help="comma-separated mutant names")
    ap.add_argument("--baseline", action="store_true", help="check each mutant's tests pass unmutated first")
    ap.add_argument("--timeout", type=int, default=600, help="seconds per pytest run (a timeout counts as killed)")
    ap.add_argument("--write", action="store_true", help="write the results file also with --only")
    args = ap.parse_args(argv)
    names = [m.name for m in MUTANTS]
    assert len(set(names)) == len(names), "duplicate mutant names"
    if args.list:
        for m in MUTANTS:
            print(f"{m.name:40s} {m.file:32s} {m.what}")
        return 0
    chosen = MUTANTS
    if args.only:
        wanted = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = sorted(set(wanted) - set(names))
        if unknown:
            ap.error(f"unknown mutant(s): {', '.join(unknown)}")
        chosen = [m for m in MUTANTS if m.name in wanted]
    rows = run(chosen, args.timeout, args.baseline)
    if not args.only or args.write:
        write_results(rows)
    return 0 if all(r["killed"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
