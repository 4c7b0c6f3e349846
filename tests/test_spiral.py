"""Spiral orders: permutations, neighbour steps, exact reverses, gather/scatter identity; local attention vs a loop."""
import math

import pytest
import torch

from medsora.models.attention import LocalAttention
from medsora.models.spiral import NUM_PAIRS, inverse, spiral_order

GRIDS = [(1, 1), (1, 5), (5, 1), (2, 2), (3, 3), (4, 4), (8, 8), (3, 7), (6, 4), (4, 16), (16, 12)]


@pytest.mark.parametrize("rows,cols", GRIDS)
def test_orders_are_spirals(rows, cols):
    seen = set()
    for pair in range(NUM_PAIRS):
        order = spiral_order(rows, cols, pair)
        assert sorted(order.tolist()) == list(range(rows * cols))            # a permutation
        rc = torch.stack([order // cols, order % cols], dim=1)
        steps = (rc[1:] - rc[:-1]).abs().sum(dim=1)
        assert (steps == 1).all()                                             # consecutive = grid neighbours
        r0, c0 = rc[0].tolist()
        assert r0 in (0, rows - 1) and c0 in (0, cols - 1)                   # starts at a corner
        rev = spiral_order(rows, cols, pair, reverse=True)
        assert rev.tolist() == order.tolist()[::-1]                           # the exact reverse
        seen.add(tuple(order.tolist()))
    if rows >= 2 and cols >= 2:
        assert len(seen) == NUM_PAIRS                                         # 8 distinct orders (16 with reverses)


def test_known_spirals():
    # 3x4 grid, flat index r * 4 + c:  0 1 2 3 / 4 5 6 7 / 8 9 10 11
    assert spiral_order(3, 4, 0).tolist() == [0, 1, 2, 3, 7, 11, 10, 9, 8, 4, 5, 6]          # clockwise
    assert spiral_order(3, 4, 4).tolist() == [0, 4, 8, 9, 10, 11, 7, 3, 2, 1, 5, 6]          # counter-clockwise
    assert spiral_order(3, 4, 1).tolist() == [3, 2, 1, 0, 4, 8, 9, 10, 11, 7, 6, 5]          # clockwise, h-flip


@pytest.mark.parametrize("rows,cols", [(4, 4), (3, 7), (16, 12)])
def test_gather_scatter_identity(rows, cols):
    torch.manual_seed(0)
    x = torch.randn(2, rows * cols, 5)
    for pair in range(NUM_PAIRS):
        for reverse in (False, True):
            order = spiral_order(rows, cols, pair, reverse)
            seq = x[:, order]
            assert torch.equal(seq[:, inverse(order)], x)
            # the k-th token of the sequence is the grid token at the visited (r, c)
            grid = x.view(2, rows, cols, 5)
            k = rows * cols // 2
            r, c = divmod(order[k].item(), cols)
            assert torch.equal(seq[:, k], grid[:, r, c])


def _naive_local_attention(attn, x):
    """Loop over queries: keys within [p - w*lb, p + w*lf], rotary by complex rotation of (i, i + d/2) pairs."""
    b, n, d = x.shape
    w, lb, lf, h = attn.window, attn.look_backward, attn.look_forward, attn.heads
    e = d // h
    q, k, v = attn.to_q(x), attn.to_k(x), attn.to_v(x)
    freqs = 10000.0 ** (-torch.arange(0, e, 2, dtype=torch.float64) / e)

    def rope(t, p):  # t (..., e)
        z = torch.complex(t[..., : e // 2].double(), t[..., e // 2:].double()) * torch.polar(
            torch.ones_like(freqs), p * freqs)
        return torch.cat([z.real, z.imag], dim=-1)

    out = torch.zeros(b, n, d, dtype=torch.float64)
    for head in range(h):
        sl = slice(head * e, (head + 1) * e)
        for p in range(n):
            keys = [j for j in range(n) if p - w * lb <= j <= p + w * lf]
            qp = rope(q[:, p, sl], p)                                              # (b, e)
            kj = torch.stack([rope(k[:, j, sl], j) for j in keys], dim=1)          # (b, K, e)
            a = torch.softmax((kj @ qp[:, :, None]).squeeze(-1) / math.sqrt(e), dim=-1)
            out[:, p, sl] = (a[:, :, None] * v[:, keys, sl].double()).sum(1)
    return out


@pytest.mark.parametrize("n,heads,window,lb,lf", [(64, 1, 8, 1, 1), (20, 2, 8, 1, 1), (24, 1, 4, 2, 1), (7, 1, 8, 1, 1)])
def test_local_attention_matches_naive_loop(n, heads, window, lb, lf):
    torch.manual_seed(0)
    attn = LocalAttention(32, heads=heads, window=window, look_backward=lb, look_forward=lf, dropout=0.1).double().eval()
    x = torch.randn(3, n, 32, dtype=torch.float64)
    torch.testing.assert_close(attn(x), _naive_local_attention(attn, x), rtol=1e-9, atol=1e-9)


def test_local_attention_is_local_and_drops_in_training():
    torch.manual_seed(0)
    attn = LocalAttention(16, window=4).eval()
    x = torch.randn(1, 32, 16)
    x2 = x.clone()
    x2[:, 20] += 1.0                                                      # token 20 sees 16..24 only
    changed = (attn(x) - attn(x2)).abs().amax(-1)[0] > 0
    assert changed.nonzero().flatten().tolist() == list(range(16, 25))
    attn.train()
    assert not torch.equal(attn(x), attn(x))                              # attention dropout active
