"""The spatial Mamba's token orders written out by hand (issue 22), not computed by the code's own formulas.

Sec. 3.1 / Fig. 3: before the selective scan, the f·w̄ tokens of a width plane (one token row across the frames) or
the f·h̄ tokens of a height plane (one token column across the frames) are rearranged along a spiral and along its
reverse; both are scanned, put back in place with the spiral indexes and summed; Eq. 9 fuses the two axes.
`models/spiral.py` numbers a rows×cols grid's cells r * cols + c; the 8 spirals are: clockwise from the top-left
corner (pair 0), mirrored left-right (1), upside down (2), both (3), and the same four counter-clockwise (4-7).
"""
import pytest
import torch

from medsora.config import model_preset
from medsora.models.blocks import SpatialMamba
from medsora.models.spiral import inverse, spiral_order

# 3x3 grid:   0 1 2        2x4 grid:   0 1 2 3        2x3 grid:   0 1 2
#             3 4 5                    4 5 6 7                    3 4 5
#             6 7 8
HAND = {
    (3, 3): [
        [0, 1, 2, 5, 8, 7, 6, 3, 4],      # 0: clockwise from the top-left corner
        [2, 1, 0, 3, 6, 7, 8, 5, 4],      # 1: mirrored left-right (starts top-right)
        [6, 7, 8, 5, 2, 1, 0, 3, 4],      # 2: upside down (starts bottom-left)
        [8, 7, 6, 3, 0, 1, 2, 5, 4],      # 3: both (starts bottom-right)
        [0, 3, 6, 7, 8, 5, 2, 1, 4],      # 4: counter-clockwise from the top-left corner
        [2, 5, 8, 7, 6, 3, 0, 1, 4],      # 5: counter-clockwise, mirrored left-right
        [6, 3, 0, 1, 2, 5, 8, 7, 4],      # 6: counter-clockwise, upside down
        [8, 5, 2, 1, 0, 3, 6, 7, 4],      # 7: counter-clockwise, both
    ],
    (2, 4): [
        [0, 1, 2, 3, 7, 6, 5, 4],
        [3, 2, 1, 0, 4, 5, 6, 7],
        [4, 5, 6, 7, 3, 2, 1, 0],
        [7, 6, 5, 4, 0, 1, 2, 3],
        [0, 4, 5, 6, 7, 3, 2, 1],
        [3, 7, 6, 5, 4, 0, 1, 2],
        [4, 0, 1, 2, 3, 7, 6, 5],
        [7, 3, 2, 1, 0, 4, 5, 6],
    ],
    (2, 3): [
        [0, 1, 2, 5, 4, 3],
        [2, 1, 0, 3, 4, 5],
        [3, 4, 5, 2, 1, 0],
        [5, 4, 3, 0, 1, 2],
        [0, 3, 4, 5, 2, 1],
        [2, 5, 4, 3, 0, 1],
        [3, 0, 1, 2, 5, 4],
        [5, 2, 1, 0, 3, 4],
    ],
}

# inverse permutations, by hand: position of grid cell k in the visit order
HAND_INVERSE = {
    ((3, 3), 0): [0, 1, 2, 7, 8, 3, 6, 5, 4],
    ((3, 3), 5): [6, 7, 0, 5, 8, 1, 4, 3, 2],
    ((2, 4), 0): [0, 1, 2, 3, 7, 6, 5, 4],
    ((2, 4), 6): [1, 2, 3, 4, 0, 7, 6, 5],
    ((2, 3), 5): [4, 5, 0, 3, 2, 1],
}


@pytest.mark.parametrize("grid", sorted(HAND))
@pytest.mark.parametrize("pair", range(8))
def test_spiral_orders_written_out_by_hand(grid, pair):
    rows, cols = grid
    want = HAND[grid][pair]
    assert spiral_order(rows, cols, pair).tolist() == want
    assert spiral_order(rows, cols, pair, reverse=True).tolist() == want[::-1]    # centre -> corner
    assert spiral_order(rows, cols, pair + 8).tolist() == want                    # block i uses pair i % 8


@pytest.mark.parametrize("key", sorted(HAND_INVERSE))
def test_inverse_permutation_written_out_by_hand(key):
    grid, pair = key
    order = spiral_order(*grid, pair)
    assert inverse(order).tolist() == HAND_INVERSE[key]
    # and the reverse's inverse: cell k sits at position n - 1 - (its position in the forward order)
    n = grid[0] * grid[1]
    assert inverse(order.flip(0)).tolist() == [n - 1 - p for p in HAND_INVERSE[key]]


# The spatial Mamba on f = 2 frames of a 3x4 token grid (h̄ = 3 rows, w̄ = 4 columns):
#   width plane of token row r: the 2x4 grid (frame, column), cell index frame * 4 + column
#   height plane of token column c: the 2x3 grid (frame, row), cell index frame * 3 + row
F_, H_, W_ = 2, 3, 4


def _spatial(pair):
    cfg = model_preset("tiny")
    torch.manual_seed(pair)
    sm = SpatialMamba(cfg.hidden_size, pair=pair, d_state=cfg.d_state, d_conv=cfg.d_conv, expand=cfg.expand,
                      headdim=cfg.headdim, ngroups=cfg.ngroups, chunk_size=cfg.chunk_size).double().eval()
    with torch.no_grad():                                   # an informative mixer with a slow decay
        for p in sm.parameters():
            p.add_(0.1 * torch.randn_like(p))
        sm.mamba.A_log.fill_(-3.0)
    return sm


def _one_direction(monkeypatch, sm, keep):
    """Zero the output of one direction of every scan: `_scan` runs [spiral sequences; reversed sequences] as one
    batch through `mix`; keep="forward" keeps the first half, keep="reverse" the second."""
    mix = sm.mamba.mix

    def only(zxbcdt):
        y = mix(zxbcdt).clone()
        half = y.shape[0] // 2
        y[half:] = 0 if keep == "forward" else y[half:]
        y[:half] = 0 if keep == "reverse" else y[:half]
        return y
    monkeypatch.setattr(sm.mamba, "mix", only)


def _expected_changed(pair, keep, f0, r0, c0):
    """Grid tokens (frame, row, col) whose output depends on token (f0, r0, c0), from the hand-written orders: in the
    width plane of row r0 the cells visited at or after (f0, c0) — at or before, for the reversed scan —, and the
    same in the height plane of column c0. A Mamba scan is causal along its sequence."""
    out = set()
    for plane, cell, cells in ((HAND[(2, 4)][pair], f0 * W_ + c0, lambda k: (k // W_, r0, k % W_)),
                               (HAND[(2, 3)][pair], f0 * H_ + r0, lambda k: (k // H_, k % H_, c0))):
        pos = plane.index(cell)
        after = plane[pos:] if keep == "forward" else plane[:pos + 1]
        out |= {cells(k) for k in after}
    return out


@pytest.mark.parametrize("pair", [0, 5])
@pytest.mark.parametrize("keep", ["forward", "reverse"])
def test_spatial_mamba_output_depends_on_tokens_in_the_hand_written_order(monkeypatch, pair, keep):
    """Per direction, perturbing one token changes exactly the tokens after it in the hand-written spiral of its
    width plane (its token row across the frames) and of its height plane (its column across the frames) — before
    it for the reverse scan. Catches: the reverse not reversed, width and height planes swapped, the frame axis
    left out of a plane, a wrong inverse permutation."""
    sm = _spatial(pair)
    _one_direction(monkeypatch, sm, keep)
    d = sm.gate_w.in_features
    torch.manual_seed(100 + pair)
    x = torch.randn(1, F_, H_ * W_, d, dtype=torch.float64)
    with torch.no_grad():
        y = sm(x, F_, (H_, W_))
    for f0, r0, c0 in [(0, 1, 2), (1, 0, 1), (0, 2, 0)]:
        x2 = x.clone()
        x2[0, f0, r0 * W_ + c0] += 1.0
        with torch.no_grad():
            y2 = sm(x2, F_, (H_, W_))
        diff = (y2 - y).abs().amax(-1)[0]                                      # (F, h̄·w̄)
        changed = {(f, k // W_, k % W_) for f in range(F_) for k in range(H_ * W_) if diff[f, k] > 1e-9}
        assert changed == _expected_changed(pair, keep, f0, r0, c0), (f0, r0, c0)
        assert diff.max() > 1e-4


def test_both_directions_summed_reach_every_token_of_both_planes():
    """Forward + reverse together: a token's change reaches its whole width plane and its whole height plane, and
    nothing else (no token of another row and another column)."""
    sm = _spatial(3)
    d = sm.gate_w.in_features
    x = torch.randn(1, F_, H_ * W_, d, dtype=torch.float64)
    x2 = x.clone()
    x2[0, 1, 1 * W_ + 2] += 1.0
    with torch.no_grad():
        diff = (sm(x2, F_, (H_, W_)) - sm(x, F_, (H_, W_))).abs().amax(-1)[0]
    changed = {(f, k // W_, k % W_) for f in range(F_) for k in range(H_ * W_) if diff[f, k] > 1e-9}
    assert changed == {(f, r, c) for f in range(F_) for r in range(H_) for c in range(W_) if r == 1 or c == 2}


@pytest.mark.parametrize("axis", ["width", "height"])
def test_each_gate_of_eq9_gates_its_own_axis(axis):
    """Eq. 9's first gate (W1, b1: `gate_w`) weighs the width planes, the second (`gate_h`) the height planes: with
    one gate shut (bias -50, sigmoid ~ 2e-22) a token's change reaches only the other axis' plane. Catches the
    two axes' outputs fed to each other's gate."""
    sm = _spatial(0)
    shut, open_ = (sm.gate_h, sm.gate_w) if axis == "width" else (sm.gate_w, sm.gate_h)
    with torch.no_grad():
        shut.weight.zero_(), shut.bias.fill_(-50.0)
        open_.weight.zero_(), open_.bias.fill_(50.0)
    d = sm.gate_w.in_features
    x = torch.randn(1, F_, H_ * W_, d, dtype=torch.float64)
    x2 = x.clone()
    x2[0, 0, 1 * W_ + 2] += 1.0                                               # frame 0, row 1, column 2
    with torch.no_grad():
        diff = (sm(x2, F_, (H_, W_)) - sm(x, F_, (H_, W_))).abs().amax(-1)[0]
    changed = {(f, k // W_, k % W_) for f in range(F_) for k in range(H_ * W_) if diff[f, k] > 1e-9}
    plane = {(f, 1, c) for f in range(F_) for c in range(W_)} if axis == "width" else \
        {(f, r, 2) for f in range(F_) for r in range(H_)}
    assert changed == plane
