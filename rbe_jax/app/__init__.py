"""The application layer: the ``rbe-jax`` command line and large sampling jobs.

- :mod:`.cli` — ``rbe-jax sample | calibrate | train | info``;
- :mod:`.jobs` — ``sample_job``: numbered shards, a manifest, resume;
- :mod:`.cache` — where the CLI keeps the schedules it calibrates.

May import every other layer; nothing imports from here.
"""

from .jobs import JobError, sample_job

__all__ = [
    "JobError",
    "sample_job",
]
