"""PreferenceGame: construction, validation messages, shapes, backends."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nashalign.game import PreferenceGame
from nashalign.games import random_game, rock_paper_scissors


def rps_P() -> np.ndarray:
    return rock_paper_scissors().P[0]


def test_single_context_is_promoted_and_squeezed():
    g = PreferenceGame(rps_P())
    assert g.P.shape == (1, 3, 3)
    assert g.squeezed and g.num_contexts == 1 and g.num_responses == 3
    np.testing.assert_allclose(g.ref, np.full((1, 3), 1 / 3))
    assert g.win_rates([1.0, 0, 0]).shape == (3,)
    np.testing.assert_array_equal(g.win_rates([1.0, 0, 0]), [0.5, 1.0, 0.0])  # P(y > rock)


def test_batched_game_shapes_and_shared_ref():
    P = random_game(4, num_contexts=3, seed=0).P
    g = PreferenceGame(P, ref=[0.1, 0.2, 0.3, 0.4])
    assert not g.squeezed and g.P.shape == (3, 4, 4)
    assert g.ref.shape == (3, 4)
    np.testing.assert_allclose(g.ref, np.tile([0.1, 0.2, 0.3, 0.4], (3, 1)))
    assert g.win_rates(np.full(4, 0.25)).shape == (3, 4)
    assert g.preference(np.full(4, 0.25), np.full(4, 0.25)).shape == (3,)
    np.testing.assert_allclose(g.preference(np.full(4, 0.25), np.full(4, 0.25)), 0.5, atol=1e-15)


def test_preference_is_constant_sum():
    g = random_game(6, seed=3)
    a = np.array([0.1, 0.2, 0.3, 0.1, 0.2, 0.1])
    b = np.array([0.3, 0.0, 0.0, 0.5, 0.1, 0.1])
    assert g.preference(a, b) + g.preference(b, a) == pytest.approx(1.0, abs=1e-14)
    assert g.preference(a, a) == pytest.approx(0.5, abs=1e-15)


def test_ref_with_zero_entries_has_minus_inf_log():
    g = PreferenceGame(rps_P(), ref=[0.5, 0.5, 0.0])
    assert g.log_ref[0, 2] == -np.inf
    assert np.isfinite(g.log_ref[0, :2]).all()


def test_torch_game_keeps_backend_and_agrees_with_numpy():
    P = random_game(5, num_contexts=2, seed=1).P
    gn = PreferenceGame(P)
    gt = PreferenceGame(torch.as_tensor(P))
    assert gt.is_torch and gt.P.dtype == torch.float64
    pi = np.array([0.2, 0.2, 0.1, 0.4, 0.1])
    wt = gt.win_rates(torch.as_tensor(pi))
    assert isinstance(wt, torch.Tensor)
    np.testing.assert_allclose(wt.numpy(), gn.win_rates(pi), atol=1e-15)
    back = gt.to("numpy")
    assert isinstance(back.P, np.ndarray)
    np.testing.assert_array_equal(back.P, P)


def test_with_ref_replaces_mu_only():
    g = rock_paper_scissors()
    h = g.with_ref([0.7, 0.2, 0.1])
    np.testing.assert_allclose(h.ref, [[0.7, 0.2, 0.1]])
    np.testing.assert_allclose(g.ref, np.full((1, 3), 1 / 3))
    np.testing.assert_array_equal(h.P, g.P)


# ----------------------------------------------------------------------------- validation messages
@pytest.mark.parametrize(
    "P, err, match",
    [
        (np.array([[0.5, np.nan], [0.5, 0.5]]), ValueError, "non-finite"),
        (np.array([[0.5, np.inf], [0.0, 0.5]]), ValueError, "non-finite"),
        (np.array([[0.5, 1.5], [-0.5, 0.5]]), ValueError, r"probabilities in \[0, 1\]"),
        (np.array([[0.5, 0.7], [0.7, 0.5]]), ValueError, r"P \+ P\^T must equal 1"),
        (np.array([[0.4, 0.5], [0.5, 0.6]]), ValueError, r"P \+ P\^T must equal 1"),
        (np.full((2, 3), 0.5), ValueError, "square"),
        (np.full(3, 0.5), ValueError, r"shape \(n, n\)"),
        (np.full((1, 1, 2, 2), 0.5), ValueError, r"shape \(n, n\)"),
        ("P", TypeError, "numeric array"),
        (None, TypeError, "numeric array"),
        ([["a", "b"], ["c", "d"]], TypeError, "numeric array"),
    ],
)
def test_invalid_P_raises_with_message(P, err, match):
    with pytest.raises(err, match=match):
        PreferenceGame(P)


def test_skew_violation_message_names_the_entry():
    P = rps_P().copy()
    P[2, 0] += 1e-6
    with pytest.raises(ValueError, match=r"P\[0,2\] \+ P\[2,0\]|P\[2,0\] \+ P\[0,2\]"):
        PreferenceGame(P)


def test_skew_tolerance_accepts_rounding_noise():
    P = rps_P().copy()
    P[2, 0] += 1e-12
    PreferenceGame(P)  # within 1e-9: accepted


@pytest.mark.parametrize(
    "ref, match",
    [
        ([0.5, 0.5], r"shape \(2,\), expected \(3,\)"),
        (np.full((2, 3), 1 / 3), r"expected \(3,\) or \(1, 3\)"),
        ([0.6, 0.6, -0.2], "negative entries"),
        ([0.2, 0.2, 0.2], "must sum to 1"),
        ([0.5, np.nan, 0.5], "non-finite"),
    ],
)
def test_invalid_ref_raises_with_message(ref, match):
    with pytest.raises(ValueError, match=match):
        PreferenceGame(rps_P(), ref=ref)


def test_invalid_policy_raises_with_message():
    g = rock_paper_scissors()
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        g.win_rates([0.5, 0.5])
    with pytest.raises(ValueError, match="negative"):
        g.win_rates([1.5, -0.5, 0.0])
    with pytest.raises(ValueError, match="sum to 1"):
        g.win_rates([0.5, 0.4, 0.0])


def test_to_rejects_unknown_backend():
    with pytest.raises(ValueError, match="backend must be 'numpy' or 'torch'"):
        rock_paper_scissors().to("jax")


def test_to_moves_torch_games_directly_and_keeps_values():
    P = random_game(4, num_contexts=3, seed=2).P
    ref = np.full((3, 4), 0.25)
    gt = PreferenceGame(torch.as_tensor(P), ref=torch.as_tensor(ref))
    same = gt.to("torch")  # nothing to change: the tensors are shared, not copied through numpy
    assert same.P is gt.P and same.ref is gt.ref
    f32 = gt.to("torch", dtype=torch.float32)
    assert f32.P.dtype == torch.float32 and f32.P.device == gt.P.device
    np.testing.assert_array_equal(f32.P.numpy(), P.astype(np.float32))
    back = f32.to("torch", device="cpu")  # the default dtype is float64 again
    assert back.P.dtype == torch.float64 and back.log_ref.dtype == torch.float64
    np.testing.assert_array_equal(PreferenceGame(P).to("torch", device="cpu").P.numpy(), P)


@pytest.mark.gpu
def test_to_moves_between_cpu_and_cuda():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    P = random_game(4, num_contexts=3, seed=2).P
    gc = PreferenceGame(P).to("torch", device="cuda")
    assert gc.P.is_cuda and gc.ref.is_cuda and gc.log_ref.is_cuda
    assert gc.to("torch").P.is_cuda  # stays on its device
    gc2 = gc.to("torch", dtype=torch.float32)
    assert gc2.P.is_cuda and gc2.P.dtype == torch.float32
    np.testing.assert_array_equal(gc.to("torch", device="cpu").P.numpy(), P)
    np.testing.assert_array_equal(gc.to("numpy").P, P)


def test_mixed_precision_game_keeps_policies_in_float64():
    g = random_game(5, num_contexts=2, seed=1, ref="random")
    m = g.to("numpy", p_dtype=np.float32)
    assert m.P.dtype == np.float32 and m.ref.dtype == np.float64 and m.log_ref.dtype == np.float64
    assert "P float32, policies float64" in repr(m)
    pi = np.array([0.2, 0.2, 0.1, 0.4, 0.1])
    w = m.win_rates(pi)  # formed in float32, returned in float64
    assert w.dtype == np.float64
    np.testing.assert_allclose(w, g.win_rates(pi), atol=1e-6, rtol=0)
    assert m.to("numpy", p_dtype=np.float32).P is m.P  # already stored so: shared
    mt = m.to("torch", p_dtype=torch.float32)
    assert mt.P.dtype == torch.float32 and mt.ref.dtype == torch.float64
    # float32 products summed by another BLAS (torch vs numpy) differ by rounding: a few float32 eps, not bitwise
    np.testing.assert_allclose(mt.win_rates(torch.as_tensor(pi)).numpy(), w, atol=4 * np.finfo(np.float32).eps, rtol=0)
    with pytest.raises(ValueError, match="floating"):
        g.to("numpy", p_dtype=np.int64)
    with pytest.raises(ValueError, match="floating torch dtypes"):
        g.to("torch", dtype=np.float64)
