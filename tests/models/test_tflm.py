"""The TFLM runtime wrapper: arena bisection, allocation report and the runtime's own error reasons."""

import re
from pathlib import Path

import numpy as np
import pytest

from models.tflm import (
    TflmError,
    TflmModel,
    _construct,
    arenas_agree,
    min_arena_bytes,
    reported_arena_bytes,
    tflm_error,
)
from tests.models.test_cli_models import HYBRID

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("variant", ["baseline-no_opt", "baseline-int8", "clustered-int8_lut"])
def test_min_arena_is_tight(tiny_variants: dict[str, Path], variant: str) -> None:
    data = tiny_variants[variant].read_bytes()
    arena = min_arena_bytes(data)
    assert not isinstance(_construct(data, arena)[0], BaseException)
    assert isinstance(_construct(data, arena - 1)[0], BaseException)
    # the bisected minimum and the allocator's report agree within its bookkeeping slack
    assert arenas_agree(arena, reported_arena_bytes(data))


def test_hybrid_and_float16_models_are_refused_with_the_runtime_reason(
    tiny_variants: dict[str, Path],
) -> None:
    assert re.search(HYBRID, tflm_error(tiny_variants["baseline-dynamic"].read_bytes()))
    float16 = tflm_error(tiny_variants["baseline-float16"].read_bytes())
    assert float16 is not None and "DEQUANTIZE" in float16.upper()
    with pytest.raises(TflmError, match=HYBRID):
        TflmModel(tiny_variants["baseline-dynamic"].read_bytes())


def test_too_small_arena_names_the_size(tiny_variants: dict[str, Path]) -> None:
    with pytest.raises(TflmError, match="in 1024 bytes"):
        TflmModel(tiny_variants["baseline-int8"].read_bytes(), 1024)


def test_int8_outputs_close_to_float(tiny_variants: dict[str, Path], digits_test) -> None:
    from models.tflm import dequantize_output, quantize_input

    x, _ = digits_test
    f = TflmModel(tiny_variants["baseline-no_opt"].read_bytes())
    q = TflmModel(tiny_variants["baseline-int8"].read_bytes())
    agree = 0
    for i in range(40):
        pf = f.invoke(x[i : i + 1])
        pq = dequantize_output(q.invoke(quantize_input(x[i : i + 1], q.input)), q.output)
        agree += int(pf.argmax() == pq.argmax())
        assert np.abs(pf - pq).max() < 0.25
    assert agree >= 36
