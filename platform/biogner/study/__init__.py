"""The format study, one module per job: `config` (what to train and evaluate), `sweep` (train
and evaluate every cell, resumable), `results` (the runs as ranked results), `select` (the
champion and the registry alias), `report` and `figures` (tables and plots).
"""
