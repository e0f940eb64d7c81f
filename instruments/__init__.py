"""VISA oscilloscope drivers and a SCPI instrument simulator. Independent of `hil` and `models`."""
