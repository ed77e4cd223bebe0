"""r1kit: reasoning reinforcement learning the DeepSeek-R1 way."""

__version__ = "0.1.0"
