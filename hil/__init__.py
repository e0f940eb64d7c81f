"""TinyML hardware-in-the-loop harness: bench, protocol, power, results, gate and report."""

__version__ = "0.1.0"
