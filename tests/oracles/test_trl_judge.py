import pytest
import torch

from nashalign.oracles import JudgeAdapter, OracleError, as_oracle, symmetrize


class IndexJudge:
    """TRL's historical BasePairwiseJudge shape: returns the index of the better completion."""

    def __init__(self, fail_on=()):
        self.fail_on = set(fail_on)
        self.kwargs = None

    def judge(self, prompts, completions, shuffle_order=True):
        self.kwargs = {"shuffle_order": shuffle_order}
        out = []
        for p, (a, b) in zip(prompts, completions):
            if a in self.fail_on or b in self.fail_on:
                out.append(-1)
            else:
                out.append(0 if len(a) >= len(b) else 1)  # longer wins, the first on ties (position bias)
        return out


class ScoreJudge:
    """PairRM-judge shape: ``return_scores=True`` gives P(first better)."""

    def judge(self, prompts, completions, shuffle_order=True, return_scores=False, temperature=1.0):
        assert return_scores
        return [0.6 + 0.1 * (len(a) > len(b)) for a, b in completions]


def test_index_judge_becomes_hard_probabilities(assert_conforms):
    judge = IndexJudge()
    oracle = as_oracle(judge)
    assert isinstance(oracle, JudgeAdapter) and not oracle.return_scores
    p = assert_conforms(oracle, ["x", "y", "z"], ["long answer", "a", "same"], ["b", "longer", "same"])
    assert p.tolist() == [1.0, 0.0, 1.0]
    assert judge.kwargs == {"shuffle_order": False}  # order stays ours; symmetrize handles bias
    assert symmetrize(oracle)(["z"], ["same"], ["same"]).item() == 0.5


def test_score_judge_returns_scores():
    oracle = JudgeAdapter(ScoreJudge())
    assert oracle.return_scores
    assert oracle(["x", "x"], ["aa", "a"], ["a", "aa"]).tolist() == pytest.approx([0.7, 0.6])


def test_judge_failures_raise_by_default_naming_the_pairs():
    oracle = JudgeAdapter(IndexJudge(fail_on={"???"}), name="gpt-judge")
    with pytest.raises(
        OracleError,
        match=r"gpt-judge: the judge failed \(returned -1\) on 1 of 2 pairs \(#1: prompt='q2', first='\?\?\?'",
    ):
        oracle(["q1", "q2"], ["a", "???"], ["b", "c"])


def test_judge_failure_policies():
    tie = JudgeAdapter(IndexJudge(fail_on={"???"}), on_failure="tie")
    assert tie(["q", "q"], ["???", "aa"], ["b", "a"]).tolist() == [0.5, 1.0]
    coin_a = JudgeAdapter(IndexJudge(fail_on={"???"}), on_failure="coin", seed=3)
    coin_b = JudgeAdapter(IndexJudge(fail_on={"???"}), on_failure="coin", seed=3)
    draws = coin_a(["q"] * 50, ["???"] * 50, ["b"] * 50)
    assert torch.equal(draws, coin_b(["q"] * 50, ["???"] * 50, ["b"] * 50))
    assert set(draws.tolist()) == {0.0, 1.0}
    with pytest.raises(ValueError, match="on_failure must be"):
        JudgeAdapter(IndexJudge(), on_failure="ignore")


def test_judge_contract_violations():
    class Weird:
        def judge(self, prompts, completions):
            return [2 for _ in prompts]

    with pytest.raises(OracleError, match="judgement #0 is 2"):
        JudgeAdapter(Weird())(["q"], ["a"], ["b"])

    class Short:
        def judge(self, prompts, completions, **kwargs):
            return [0]

    with pytest.raises(OracleError, match="returned 1 results for 2 pairs"):
        JudgeAdapter(Short(), return_scores=False)(["q", "q"], ["a", "b"], ["c", "d"])
    with pytest.raises(TypeError, match="no judge"):
        JudgeAdapter(object())
    with pytest.raises(ValueError, match="takes no return_scores"):
        JudgeAdapter(IndexJudge(), return_scores=True)
