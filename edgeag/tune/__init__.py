"""``edgeag tune``: Optuna studies whose trials are isolated `edgeag train` runs.

`space` (the search space), `storage` (journal file or database; passwords masked),
`children` (one seed: a watched `edgeag train` child), `study` (the study, its
trials and results) and `launch` (the command's input checks). Only ``edgeag tune``
and the scripts built on it import this package; training never imports optuna.
"""
