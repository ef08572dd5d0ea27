"""Lin's concordance correlation coefficient against hand computations and an independent
numpy formula."""

import numpy as np
import pytest
import torch

from sparsepai.autosparse import ccc


def test_ccc_hand_computation():
    # means 2.5, 3; population variances 1.25, 1.5; covariance 1.25
    # ccc = 2 * 1.25 / (1.25 + 1.5 + 0.5 ** 2) = 2.5 / 3
    a = torch.tensor([1.0, 2.0, 3.0, 4.0])
    b = torch.tensor([2.0, 2.0, 3.0, 5.0])
    assert ccc(a, b) == pytest.approx(2.5 / 3, abs=1e-12)


def test_ccc_extremes_and_shift():
    a = torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0])
    assert ccc(a, a) == pytest.approx(1.0)
    assert ccc(a - 2, -(a - 2)) == pytest.approx(-1.0)
    # perfectly correlated but shifted: concordance (not correlation) drops below 1
    # var = 2, shift 1: 2 * 2 / (2 + 2 + 1) = 0.8
    assert ccc(a, a + 1) == pytest.approx(0.8)


def test_ccc_matches_numpy_formula_and_dicts():
    g = torch.Generator().manual_seed(0)
    a = {"x": torch.randint(0, 6, (30, 4), generator=g), "y": torch.randint(0, 6, (7,),
                                                                              generator=g)}
    b = {"x": (a["x"] + torch.randint(-1, 2, (30, 4), generator=g)).clamp(0, 5),
         "y": torch.randint(0, 6, (7,), generator=g)}
    xa = np.concatenate([a["x"].numpy().ravel(), a["y"].numpy()]).astype(float)
    xb = np.concatenate([b["x"].numpy().ravel(), b["y"].numpy()]).astype(float)
    rho = np.corrcoef(xa, xb)[0, 1]
    sa, sb = xa.std(), xb.std()
    expected = 2 * rho * sa * sb / (sa ** 2 + sb ** 2 + (xa.mean() - xb.mean()) ** 2)
    assert ccc(a, b) == pytest.approx(expected, rel=1e-10)
    assert ccc(a["x"], b["x"]) != pytest.approx(expected)  # the dict pairs every tensor


def test_ccc_bad_input():
    with pytest.raises(ValueError, match="values"):
        ccc(torch.ones(3), torch.ones(4))
    with pytest.raises(ValueError, match="different tensors"):
        ccc({"a": torch.ones(2)}, {"b": torch.ones(2)})
    with pytest.raises(ValueError, match="shape"):
        ccc({"a": torch.ones(2, 3)}, {"a": torch.ones(3, 2)})
    with pytest.raises(TypeError):
        ccc({"a": torch.ones(2)}, torch.ones(2))
