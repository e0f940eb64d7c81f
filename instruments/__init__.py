"""VISA instrument drivers (oscilloscopes) and a SCPI instrument simulator. Independent of `hil` and `models`."""
