from django.urls import path

from annotation import views

app_name = "annotation"

urlpatterns = [
    path("", views.project_list, name="project-list"),
    path("projects/new/", views.project_create, name="project-create"),
    path("p/<slug:slug>/", views.project_detail, name="project-detail"),
    path("p/<slug:slug>/status/", views.project_status, name="project-status"),
    path("p/<slug:slug>/settings/", views.project_settings, name="project-settings"),
    path("p/<slug:slug>/labels/", views.project_labels, name="project-labels"),
    path("p/<slug:slug>/labels/new/", views.label_create, name="label-create"),
    path("p/<slug:slug>/labels/<int:pk>/edit/", views.label_update, name="label-update"),
    path("p/<slug:slug>/labels/<int:pk>/delete/", views.label_delete, name="label-delete"),
    path("p/<slug:slug>/members/", views.project_members, name="project-members"),
    path("p/<slug:slug>/members/add/", views.membership_add, name="membership-add"),
    path("p/<slug:slug>/members/<int:pk>/remove/", views.membership_remove, name="membership-remove"),
    path("p/<slug:slug>/members/invite/", views.invitation_create, name="invitation-create"),
    path(
        "p/<slug:slug>/members/invitations/<int:pk>/withdraw/",
        views.invitation_withdraw,
        name="invitation-withdraw",
    ),
    path("invite/<str:token>/", views.invitation_accept, name="invitation-accept"),
    path("p/<slug:slug>/imports/new/", views.import_upload, name="import-upload"),
    path("p/<slug:slug>/imports/<int:pk>/", views.import_batch, name="import-batch"),
    path("p/<slug:slug>/export/", views.project_export, name="project-export"),
    # Every kind of job (distillapp.jobs.JOBS), by its model name: labelingjob, trainingrun, …
    path("p/<slug:slug>/jobs/<str:kind>/<int:pk>/cancel/", views.job_cancel, name="job-cancel"),
    path("p/<slug:slug>/jobs/<str:kind>/<int:pk>/resume/", views.job_resume, name="job-resume"),
    path("p/<slug:slug>/teacher/", views.teacher_settings, name="teacher-settings"),
    path("p/<slug:slug>/teacher/estimate/", views.teacher_estimate, name="teacher-estimate"),
    path("p/<slug:slug>/labeling/estimate/", views.labeling_estimate, name="labeling-estimate"),
    path("p/<slug:slug>/labeling/start/", views.labeling_job_create, name="labeling-start"),
    path("p/<slug:slug>/review/", views.review_queue, name="review"),
    path("p/<slug:slug>/review/act/", views.review_act, name="review-act"),
    path("p/<slug:slug>/review/skip/", views.review_skip, name="review-skip"),
    path("p/<slug:slug>/review/undo/", views.review_undo, name="review-undo"),
    path("p/<slug:slug>/review/similar/", views.review_similar, name="review-similar"),
    path("p/<slug:slug>/review/bulk/", views.review_bulk, name="review-bulk"),
    path("p/<slug:slug>/review/quality/", views.review_quality, name="review-quality"),
    path("p/<slug:slug>/gold/", views.gold, name="gold"),
    path("p/<slug:slug>/gold/draw/", views.gold_draw, name="gold-draw"),
    path("p/<slug:slug>/gold/label/", views.gold_label, name="gold-label"),
    path("p/<slug:slug>/gold/adjudicate/", views.gold_adjudicate, name="gold-adjudicate"),
    path("p/<slug:slug>/gold/freeze/", views.gold_freeze, name="gold-freeze"),
    path("p/<slug:slug>/synthetic/start/", views.synthetic_start, name="synthetic-start"),
]
