"""Studies: work made of several runs (the large-batch question, the annealing recipe, sweeps).

Every study follows one protocol (:mod:`~dgs_core.studies.protocol`): ``run(stop)`` yields
:class:`StudyEvent`s, ``progress()`` says (done, total), and :func:`study_job` runs it as a
:class:`~dgs_core.jobs.Job`. :class:`TrainerStudy` implements it for several training runs.
"""

from dgs_core.studies.protocol import Study, StudyEvent, study_job
from dgs_core.studies.trainers import TrainerStudy

__all__ = ["Study", "StudyEvent", "TrainerStudy", "study_job"]
