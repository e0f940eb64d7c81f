"""firmware/main/ops.txt must cover every operator of every deployable factory variant."""

from __future__ import annotations

import pytest

from hil import firmware


@pytest.mark.slow
def test_ops_txt_covers_every_deployable_variant(tiny_variants):
    from models.tflite_file import read_model
    from models.tflm import tflm_error

    supported = firmware.supported_ops()
    deployable = 0
    for name, path in sorted(tiny_variants.items()):
        data = path.read_bytes()
        if tflm_error(data) is not None:  # e.g. the dynamic-range variant: never flashed
            continue
        deployable += 1
        ops = read_model(data, source=name).ops
        assert set(ops) <= supported, f"{name}: {sorted(set(ops) - supported)} missing from ops.txt"
        firmware.check_ops(ops, name)
        image = firmware.pack_model(path)  # the whole pre-flash path accepts it
        firmware.check_fits(image, firmware.model_partition())
    assert deployable >= 2  # at least the float and int8 baselines
