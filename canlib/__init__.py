"""canlib: the reproducible companion of the CAN person re-identification paper."""

__version__ = "0.1.0"
