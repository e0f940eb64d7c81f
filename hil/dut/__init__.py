"""The device-under-test protocols the harness speaks, beside its own (`hil.protocol`, docs/protocol.md).

`mlperf_wire` is the MLPerf Tiny / EEMBC EnergyRunner protocol without I/O (mlcommons/tiny `benchmark/api`),
`mlperf_tiny` its host client; the virtual board's MLPerf Tiny personality is `hil.sim.mlperf_device`.
docs/mlperf-tiny.md says what is implemented and what is not yet.
"""
