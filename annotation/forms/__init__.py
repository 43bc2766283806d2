"""The annotation app's forms, by stage: projects, the corpus (import, export, gold draw), the teacher."""

from annotation.forms.corpus import ExportForm, GoldDrawForm, ImportForm, recommended_gold_size
from annotation.forms.projects import (
    InvitationForm,
    LabelForm,
    MembershipForm,
    ProjectForm,
    ProjectSettingsForm,
)
from annotation.forms.teacher import LabelingForm, PromptForm, SyntheticForm, TeacherConfigForm

__all__ = [
    "ExportForm",
    "GoldDrawForm",
    "ImportForm",
    "InvitationForm",
    "LabelForm",
    "LabelingForm",
    "MembershipForm",
    "ProjectForm",
    "ProjectSettingsForm",
    "PromptForm",
    "SyntheticForm",
    "TeacherConfigForm",
    "recommended_gold_size",
]
