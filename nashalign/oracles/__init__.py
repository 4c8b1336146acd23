"""Preference oracles: ``oracle(prompts, first, second) -> P(first ≻ second | prompt)``, batched, as a tensor.

One protocol (:class:`PreferenceOracle`) covers every oracle: a game's matrix over integer ids
(:class:`MatrixOracle`), class matrices over strings (:class:`ClassMatrixOracle`), reward models as
Bradley-Terry (:class:`RewardModelOracle`), pairwise classifiers (:class:`PairwiseClassifierOracle`), general
preference models over embeddings (:class:`GPMOracle`), LLM judges read from next-token logits
(:class:`LLMJudgeOracle`), TRL-style judges (:class:`JudgeAdapter`) and plain functions
(:func:`from_callable`), and judges served behind an OpenAI-compatible HTTP API (:class:`ServedJudgeOracle`).  Wrappers make them safe: :func:`symmetrize`, :func:`cached`,
:func:`disk_cached` (sqlite, shared by processes and runs), :func:`micro_batched`, :func:`retrying`, :func:`validated`, :func:`counted`; :func:`check_oracle` reports
consistency and position bias.

Importing this package does not import ``transformers``; the Hugging Face oracles import it when built.
"""

from nashalign.oracles.base import (
    FunctionOracle,
    OracleError,
    PreferenceOracle,
    as_oracle,
    from_callable,
    oracle_name,
    register_adapter,
)
from nashalign.oracles.disk_cache import DiskCachedOracle, PreferenceStore, disk_cached, oracle_identity
from nashalign.oracles.factory import build_oracle
from nashalign.oracles.gpm import DEFAULT_EMBED_TEMPLATE, GPMOracle, MeanPoolEncoder, default_encoder_path
from nashalign.oracles.judge import DEFAULT_JUDGE_TEMPLATE, LLMJudgeOracle
from nashalign.oracles.matrix import ClassMatrixOracle, MatrixOracle
from nashalign.oracles.pairwise import DEFAULT_PAIR_TEMPLATE, PairwiseClassifierOracle
from nashalign.oracles.reward import RewardModelOracle, SequenceClassifierScorer
from nashalign.oracles.served import Judgements, ServedJudgeOracle
from nashalign.oracles.trl_judge import JudgeAdapter
from nashalign.oracles.wrappers import (
    CachedOracle,
    CountedOracle,
    MicroBatchedOracle,
    OracleReport,
    RetryingOracle,
    SymmetrizedOracle,
    ValidatedOracle,
    cached,
    check_oracle,
    counted,
    micro_batched,
    retrying,
    symmetrize,
    validated,
)

__all__ = [
    # protocol
    "PreferenceOracle",
    "OracleError",
    "as_oracle",
    "register_adapter",
    "from_callable",
    "FunctionOracle",
    "oracle_name",
    "build_oracle",
    # tabular
    "MatrixOracle",
    "ClassMatrixOracle",
    # model-backed
    "RewardModelOracle",
    "SequenceClassifierScorer",
    "PairwiseClassifierOracle",
    "GPMOracle",
    "MeanPoolEncoder",
    "default_encoder_path",
    "LLMJudgeOracle",
    "JudgeAdapter",
    "ServedJudgeOracle",
    "Judgements",
    "DEFAULT_PAIR_TEMPLATE",
    "DEFAULT_JUDGE_TEMPLATE",
    "DEFAULT_EMBED_TEMPLATE",
    # wrappers
    "symmetrize",
    "cached",
    "disk_cached",
    "oracle_identity",
    "PreferenceStore",
    "DiskCachedOracle",
    "micro_batched",
    "retrying",
    "validated",
    "counted",
    "check_oracle",
    "OracleReport",
    "SymmetrizedOracle",
    "CachedOracle",
    "MicroBatchedOracle",
    "RetryingOracle",
    "ValidatedOracle",
    "CountedOracle",
]
