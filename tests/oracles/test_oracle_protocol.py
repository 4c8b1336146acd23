import subprocess
import sys

import numpy as np
import pytest
import torch

from nashalign.oracles import (
    FunctionOracle,
    JudgeAdapter,
    MatrixOracle,
    OracleError,
    PreferenceOracle,
    as_oracle,
    from_callable,
    oracle_name,
)
from nashalign.oracles.base import batch_len, keys_of


def longer_wins(prompts, first, second):
    """A user's oracle in five lines: the longer response wins, ties are 1/2."""
    la = torch.tensor([len(a) for a in first], dtype=torch.float64)
    lb = torch.tensor([len(b) for b in second], dtype=torch.float64)
    return 0.5 + 0.5 * torch.sign(la - lb)


def test_plain_function_is_an_oracle(assert_conforms):
    assert isinstance(longer_wins, PreferenceOracle)
    p = assert_conforms(longer_wins, ["x"] * 3, ["aaa", "a", "ab"], ["a", "aaa", "ba"])
    assert p.tolist() == [1.0, 0.0, 0.5]


def test_as_oracle_wraps_functions_returning_lists_and_arrays():
    o = as_oracle(lambda x, a, b: [0.25] * len(a), name="quarter")
    assert isinstance(o, FunctionOracle) and oracle_name(o) == "quarter"
    out = o(["x", "y"], ["a", "b"], ["c", "d"])
    assert out.dtype == torch.float64 and out.tolist() == [0.25, 0.25]
    o2 = as_oracle(lambda x, a, b: np.array([1, 0]))  # integer labels become float
    assert o2(["x", "y"], ["a", "b"], ["c", "d"]).tolist() == [1.0, 0.0]


def test_as_oracle_passes_nashalign_oracles_through_and_adapts_judges():
    m = MatrixOracle(np.array([[0.5, 0.7], [0.3, 0.5]]))
    assert as_oracle(m) is m

    class Judge:
        def judge(self, prompts, completions, shuffle_order=True):
            return [0 for _ in prompts]

    assert isinstance(as_oracle(Judge()), JudgeAdapter)
    with pytest.raises(TypeError, match="Cannot use int as a preference oracle"):
        as_oracle(3)


def test_from_callable_resolves_dotted_paths(user_module):
    o = from_callable(f"{user_module}.longer_wins")
    assert o.name == f"{user_module}.longer_wins"
    assert o(["x", "y"], ["ab", "a"], ["a", "ab"]).tolist() == [1.0, 0.0]
    with pytest.raises(ValueError, match="Could not find"):
        from_callable(f"{user_module}.no_such_function")


def test_batch_len_rejects_mismatched_and_scalar_inputs():
    assert batch_len(["a"], ["b"], ["c"]) == 1
    with pytest.raises(OracleError, match="same length, got 2, 1, 1"):
        batch_len(["a", "b"], ["b"], ["c"])
    with pytest.raises(OracleError, match="single string"):
        batch_len("abc", ["b"], ["c"])
    with pytest.raises(OracleError, match="1-D tensor"):
        batch_len(torch.zeros(2, 2, dtype=torch.long), ["b"], ["c"])


def test_keys_of_turns_tensors_into_ints():
    assert keys_of(torch.tensor([3, 4])) == [3, 4]
    assert keys_of(["a", ["b", "c"]]) == ["a", ("b", "c")]


def test_importing_oracles_does_not_import_transformers():
    code = (
        "import sys, nashalign, nashalign.oracles; "
        "bad = [m for m in ('transformers', 'tokenizers', 'peft', 'accelerate') if m in sys.modules]; "
        "print(','.join(bad)); sys.exit(1 if bad else 0)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, f"importing nashalign.oracles imported {res.stdout.strip()} {res.stderr[-500:]}"
