"""Two nested results (dicts, lists, tuples, arrays, numbers) compared leaf by leaf: where two
runs must agree to a tolerance (sums in another order differ in the last bit), the assertion
names the path of the first leaf that does not."""

from __future__ import annotations

import numpy as np


def assert_close(a, b, rtol: float = 0.0, atol: float = 1e-12, path: str = "") -> None:
    """Equal structure and text; numbers and arrays within `rtol`/`atol`, NaN where NaN."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            assert_close(a[k], b[k], rtol, atol, f"{path}.{k}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), path
        for k, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_close(x, y, rtol, atol, f"{path}[{k}]")
    elif isinstance(a, np.ndarray) and a.dtype.kind != "f":
        assert np.array_equal(a, b), path
    elif isinstance(a, float | np.ndarray):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol, equal_nan=True, err_msg=path)
    else:
        assert a == b, path
