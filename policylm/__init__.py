"""policylm: language models as reinforcement-learning policies, on Ray.

Importing the package is cheap; torch, transformers and ray load inside the functions that
need them.
"""

__version__ = "0.1.0"
