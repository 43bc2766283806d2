"""The annotation app's models, one module per area of the loop.

Every model is imported here so that Django's app registry and migrations see
them under the app label ``annotation``, and every public name is re-exported so
``from annotation.models import X`` works whichever module defines X.
"""

from __future__ import annotations

from annotation.models.examples import (
    IMPORT_AGENT,
    STUDENT_AGENT_PREFIX,
    Example,
    ExampleQuerySet,
    ForgetDecided,
    ImportBatch,
    Proposal,
    Review,
    ReviewState,
    content_hash,
    decided_key,
    forget_decided,
    normalise_text,
    random_rank,
)
from annotation.models.gold import (
    FrozenGoldSetError,
    GoldSet,
    GoldSetItem,
    GoldSetItemQuerySet,
    GoldSetQuerySet,
    SyntheticGoldError,
)
from annotation.models.projects import (
    LABEL_KEY_SEQUENCE,
    RESERVED_KEYS,
    Invitation,
    InvitationQuerySet,
    Label,
    Membership,
    Project,
    ProjectQuerySet,
    next_free_key,
    user_may_create_projects,
)
from annotation.models.review import CLAIM_SECONDS, QualityRun, ReviewClaim, SimilarityIndex
from annotation.models.teacher import (
    LabelingJob,
    LabelingJobItem,
    PromptVersion,
    SyntheticJob,
    TeacherConfig,
)

__all__ = [
    "CLAIM_SECONDS",
    "IMPORT_AGENT",
    "LABEL_KEY_SEQUENCE",
    "RESERVED_KEYS",
    "STUDENT_AGENT_PREFIX",
    "Example",
    "ExampleQuerySet",
    "ForgetDecided",
    "FrozenGoldSetError",
    "GoldSet",
    "GoldSetItem",
    "GoldSetItemQuerySet",
    "GoldSetQuerySet",
    "ImportBatch",
    "Invitation",
    "InvitationQuerySet",
    "Label",
    "LabelingJob",
    "LabelingJobItem",
    "Membership",
    "Project",
    "ProjectQuerySet",
    "PromptVersion",
    "Proposal",
    "QualityRun",
    "Review",
    "ReviewClaim",
    "ReviewState",
    "SimilarityIndex",
    "SyntheticGoldError",
    "SyntheticJob",
    "TeacherConfig",
    "content_hash",
    "decided_key",
    "forget_decided",
    "next_free_key",
    "normalise_text",
    "random_rank",
    "user_may_create_projects",
]
