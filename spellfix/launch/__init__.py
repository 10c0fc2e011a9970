"""Launching training elsewhere: a SageMaker training job, and the entry point that runs inside it.

- :mod:`spellfix.launch.instances` — instance type → GPU table (validates instance types and precision).
- :mod:`spellfix.launch.plan` — options → a validated :class:`~spellfix.launch.plan.LaunchPlan`
  (no AWS, no SDK: every user error is caught here, before anything is uploaded).
- :mod:`spellfix.launch.bundle` — the source directory shipped to the job (package, recipes, entry).
- :mod:`spellfix.launch.sagemaker` — plan → ``sagemaker.train.ModelTrainer`` → CreateTrainingJob;
  ``--dry-run`` prints the request and sends nothing (:mod:`spellfix.launch.offline`).
- :mod:`spellfix.launch.sm_env` — the SageMaker container contract (``SM_*`` env, hyperparameters).
- :mod:`spellfix.launch.entry` — the job's entry point: train, resume, export into ``SM_MODEL_DIR``.

Importing this package is light: the SageMaker SDK (the optional ``[sagemaker]`` extra) and torch
are imported only by the functions that need them.
"""

from __future__ import annotations


class LaunchError(ValueError):
    """The launch request is invalid; the message names the option and what is allowed."""


__all__ = ["LaunchError"]
