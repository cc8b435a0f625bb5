"""entroguard: measure and defend the bit rate of entropy-coded split DNNs."""

__version__ = "0.1.0"
