"""edgeag: train small reinforcement-learning policies on the device itself.

Importing ``edgeag`` imports nothing heavy; import ``edgeag.optim`` for the optimizers.
"""

__version__ = "0.1.0"
