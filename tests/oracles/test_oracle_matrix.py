import numpy as np
import pytest
import torch

from nashalign.game import PreferenceGame
from nashalign.oracles import ClassMatrixOracle, MatrixOracle, OracleError, counted

RPS = np.array([[0.5, 0.0, 1.0], [1.0, 0.5, 0.0], [0.0, 1.0, 0.5]])


def random_game(C=3, n=4, seed=0, torch_backend=False):
    rng = np.random.default_rng(seed)
    A = rng.uniform(-0.5, 0.5, size=(C, n, n))
    P = 0.5 + (A - np.swapaxes(A, -1, -2)) / 2
    return PreferenceGame(torch.from_numpy(P) if torch_backend else P)


@pytest.mark.parametrize("torch_backend", [False, True])
def test_matrix_oracle_gathers_P(torch_backend, assert_conforms):
    game = random_game(torch_backend=torch_backend)
    oracle = MatrixOracle(game)
    c = torch.tensor([0, 1, 2, 2, 1])
    i = torch.tensor([0, 3, 1, 2, 2])
    j = torch.tensor([1, 0, 1, 3, 0])
    p = assert_conforms(oracle, c, i, j, atol=0)
    P = torch.as_tensor(np.asarray(game.P)) if not torch_backend else game.P
    assert p.dtype == torch.float64
    torch.testing.assert_close(p, torch.stack([P[a, b, d] for a, b, d in zip(c, i, j)]), atol=0, rtol=0)
    # lists work too, and the diagonal is 1/2
    assert oracle([0, 1], [2, 3], [2, 3]).tolist() == [0.5, 0.5]


def test_matrix_oracle_single_context_and_range_errors():
    oracle = MatrixOracle(RPS)
    assert oracle.num_contexts == 1 and oracle.num_responses == 3
    assert oracle([0, 0, 0], [1, 2, 0], [0, 1, 2]).tolist() == [1.0, 1.0, 1.0]
    with pytest.raises(OracleError, match=r"response ids span \[0, 3\] \(need 0..2\)"):
        oracle([0], [3], [0])
    with pytest.raises(OracleError, match=r"context ids span \[1, 1\] \(need 0..0\).*context id 0"):
        oracle([1], [0], [0])
    with pytest.raises(OracleError, match="integer ids"):
        oracle(torch.zeros(1), torch.zeros(1), torch.zeros(1))
    with pytest.raises(ValueError, match="P \\+ P\\^T must equal 1"):
        MatrixOracle(np.array([[0.5, 0.9], [0.9, 0.5]]))


def test_bernoulli_outcomes_are_seeded_unbiased_and_tie_at_half():
    game = random_game(C=2, n=3, seed=1)
    c = torch.tensor([0, 1, 1] * 20000)
    i = torch.tensor([0, 1, 2] * 20000)
    j = torch.tensor([1, 2, 2] * 20000)
    a = MatrixOracle(game, bernoulli=True, seed=7)
    b = MatrixOracle(game, bernoulli=True, seed=7)
    oa, ob = a(c, i, j), b(c, i, j)
    assert torch.equal(oa, ob)  # same seed, same draws
    assert set(oa[:2].tolist()) <= {0.0, 1.0}
    assert torch.all(oa[2::3] == 0.5)  # self-comparison: exactly 1/2, no noise
    P = np.asarray(game.P)
    for k, (cc, ii, jj) in enumerate([(0, 0, 1), (1, 1, 2)]):
        mean = oa[k::3].mean().item()
        assert abs(mean - P[cc, ii, jj]) < 4 * np.sqrt(0.25 / 20000)
    assert not torch.equal(oa, MatrixOracle(game, bernoulli=True, seed=8)(c, i, j))
    gen = torch.Generator().manual_seed(7)
    assert torch.equal(MatrixOracle(game, bernoulli=True, generator=gen)(c, i, j), oa)


def test_counted_matrix_oracle_counts_pairs():
    oracle = counted(MatrixOracle(RPS))
    oracle([0, 0], [0, 1], [1, 2])
    oracle(torch.zeros(5, dtype=torch.long), torch.zeros(5, dtype=torch.long), torch.ones(5, dtype=torch.long))
    assert (oracle.calls, oracle.queries) == (2, 7)
    assert oracle.num_responses == 3  # attributes are forwarded
    oracle.reset()
    assert (oracle.calls, oracle.queries) == (0, 0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_matrix_oracle_stays_on_cuda():
    game = random_game(torch_backend=True).to("torch", device="cuda")
    oracle = MatrixOracle(game, bernoulli=True, seed=0)
    out = oracle(torch.tensor([0, 1], device="cuda"), torch.tensor([0, 1]), torch.tensor([1, 1]))
    assert out.device.type == "cuda" and out[1].item() == 0.5


# ----------------------------------------------------------------------------- class matrices
def test_class_matrix_oracle_shared_classes(assert_conforms):
    classes = {"rock": 0, "paper": 1, "scissors": 2, "stone": 0}
    oracle = ClassMatrixOracle(classes, RPS)
    prompts = ["play"] * 6
    first = ["paper", " rock\n", "lizard", "rock", "lizard", "stone"]
    second = ["rock", "scissors", "rock", "lizard", "spock", "rock"]
    p = assert_conforms(oracle, prompts, first, second, atol=0)
    assert p.tolist() == [1.0, 1.0, 0.0, 1.0, 0.5, 0.5]
    assert oracle.class_of(" paper ") == 1 and oracle.class_of("lizard") == -1
    assert oracle.classify(prompts[:3], first[:3]).tolist() == [1, 0, -1]


def test_class_matrix_oracle_per_prompt_and_normalize():
    classes = {"q1": {"yes": 0, "no": 1}, "q2": {"a": 0, "b": 1, "c": 2}}
    matrices = {"q1": [[0.5, 0.8], [0.2, 0.5]], "q2": RPS}
    oracle = ClassMatrixOracle(classes, matrices, normalize="lower")
    p = oracle(["q1", "q1", "q2", "q2", "q2"], ["YES", "no", "b", "a", "x"], ["no", "maybe", "a", "c", "c"])
    assert p.tolist() == [0.8, 1.0, 1.0, 1.0, 0.0]
    assert oracle.class_of("A", prompt="q2") == 0
    with pytest.raises(OracleError, match="no classes/matrix for prompt 'q3'"):
        oracle(["q3"], ["a"], ["b"])


def test_class_matrix_oracle_validates_inputs():
    with pytest.raises(ValueError, match=r"must be \(2, 2\)"):
        ClassMatrixOracle({"a": 0, "b": 1}, RPS)
    with pytest.raises(ValueError, match="none skipped"):
        ClassMatrixOracle({"a": 0, "b": 2}, RPS)
    with pytest.raises(ValueError, match="both 0 and 1"):
        ClassMatrixOracle({"a": 0, " a": 1}, [[0.5, 0.5], [0.5, 0.5]])
