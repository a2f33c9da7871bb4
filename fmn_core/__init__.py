"""Feature Mask Network for person re-identification (Ding, Khan, Tang, Porikli).

Plain PyTorch; nothing here imports Dagster, DVC or Great Expectations.
The modules follow the paper: ``data`` (section 4.1), ``models`` (3.1-3.2),
``losses`` and ``engine`` (3.3, Algorithm 1, 4.2), ``retrieval`` (3.4-3.5 and
the evaluation protocol of 4.2).
"""

__version__ = "0.1.0"
