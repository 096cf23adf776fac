import pytest
import torch

from llmkit.muon import Muon, orthogonalize


def test_orthogonalize_keeps_the_directions_and_evens_out_the_singular_values():
    torch.manual_seed(0)
    for shape in [(48, 130), (130, 48), (64, 64)]:
        k = min(shape)
        u0, _ = torch.linalg.qr(torch.randn(shape[0], k))
        v0, _ = torch.linalg.qr(torch.randn(shape[1], k))
        g = u0 @ torch.diag(torch.linspace(1, 20, k)) @ v0.T  # singular values from 1 to 20
        o = orthogonalize(g)
        assert o.shape == g.shape
        s = torch.linalg.svdvals(o)
        assert s.min() > 0.5 and s.max() < 1.3, s  # all near 1
        u, _, vh = torch.linalg.svd(g, full_matrices=False)
        polar = u @ vh  # the exact orthogonal factor
        cosine = (o * polar).sum() / (o.norm() * polar.norm())
        assert cosine > 0.95


def test_steps_match_torchs_muon_scaled_to_adamw():
    # torch.optim.Muon iterates in bfloat16, one matrix at a time; ours in the gradient's float32, the matrices
    # of one shape stacked: the same updates to bf16 precision.
    torch.manual_seed(0)
    shapes = [(96, 40), (96, 40), (40, 64)]
    start = [torch.randn(*s) for s in shapes]
    grads = [[torch.randn(*s) for s in shapes] for _ in range(3)]  # three steps: momentum and Nesterov count
    ours = [torch.nn.Parameter(w.clone()) for w in start]
    theirs = [torch.nn.Parameter(w.clone()) for w in start]
    opt_ours = Muon(ours, lr=0.01, weight_decay=0.5)
    opt_theirs = torch.optim.Muon(theirs, lr=0.01, weight_decay=0.5, adjust_lr_fn="match_rms_adamw")
    for step in grads:
        for params, opt in ((ours, opt_ours), (theirs, opt_theirs)):
            for p, g in zip(params, step):
                p.grad = g.clone()
            opt.step()
    for w, a, b in zip(start, ours, theirs):
        moved_ours, moved_theirs = a.detach() - w, b.detach() - w
        assert moved_ours.norm() > 0.1
        assert (moved_ours - moved_theirs).norm() / moved_theirs.norm() < 0.02


def test_vectors_are_refused_with_a_pointer_to_adamw():
    with pytest.raises(ValueError, match=r"2-D weight matrices only; got a parameter of shape \(8,\).*AdamW"):
        Muon([torch.nn.Parameter(torch.zeros(8))])
