"""The annotation app's forms, by stage: projects, the corpus (import, export, gold draw), the teacher."""

from annotation.forms.corpus import (
    EXPORT_FORMAT_NAMES,
    FORMAT_CHOICES,
    FORMAT_NAMES,
    GOLD_CHOICES,
    LABEL_MEANING_CHOICES,
    ExportForm,
    GoldDrawForm,
    ImportForm,
    recommended_gold_size,
)
from annotation.forms.projects import (
    InvitationForm,
    LabelForm,
    MembershipForm,
    ProjectForm,
    ProjectSettingsForm,
    option_form_field,
)
from annotation.forms.teacher import LabelingForm, PromptForm, SyntheticForm, TeacherConfigForm

__all__ = [
    "EXPORT_FORMAT_NAMES",
    "FORMAT_CHOICES",
    "FORMAT_NAMES",
    "GOLD_CHOICES",
    "LABEL_MEANING_CHOICES",
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
    "option_form_field",
    "recommended_gold_size",
]
