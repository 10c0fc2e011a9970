"""Batch correction of whole query logs: ``spellfix correct --input FILE --output FILE``.

:func:`correct_file` plans the input into parts (:mod:`~spellfix.batch.formats`), corrects them on an
engine (:mod:`~spellfix.batch.local` processes, :mod:`~spellfix.batch.ray_engine` Ray Data actors;
both run :func:`spellfix.batch.worker.correct_part`) and keeps finished parts for resume
(:mod:`~spellfix.batch.parts`). Importing this package does not import torch.
"""

from spellfix.batch.job import ENGINES, Summary, correct_file
from spellfix.batch.worker import ModelSpec

__all__ = ["ENGINES", "ModelSpec", "Summary", "correct_file"]
