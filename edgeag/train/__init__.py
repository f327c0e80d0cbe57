"""The run: its config, the driver (setup, loop, finish), the device settings, the run
directory and checkpoints, envs, and the child processes that run ``edgeag train``.

The algorithms themselves live in `edgeag.algos`. This package imports nothing heavy.
"""
