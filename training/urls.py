from django.urls import path

from training import views

app_name = "training"

urlpatterns = [
    path("p/<slug:slug>/", views.runs, name="runs"),
    path("p/<slug:slug>/runs/new/", views.run_create, name="run-create"),
    path("p/<slug:slug>/runs/<int:number>/", views.run_detail, name="run"),
    path("p/<slug:slug>/runs/<int:number>/evaluate/", views.run_evaluate, name="run-evaluate"),
    path("p/<slug:slug>/runs/<int:number>/download/", views.run_download, name="run-download"),
    path("p/<slug:slug>/evaluation-jobs/<int:pk>/", views.evaluation_job, name="evaluation-job"),
    path("p/<slug:slug>/evaluations/<int:pk>/", views.evaluation, name="evaluation"),
    path(
        "p/<slug:slug>/evaluations/<int:pk>/prefer/",
        views.evaluation_preference,
        name="evaluation-preference",
    ),
    path(
        "p/<slug:slug>/evaluations/<int:pk>/examples/", views.evaluation_examples, name="evaluation-examples"
    ),
    path("p/<slug:slug>/compare/", views.compare, name="compare"),
    path("p/<slug:slug>/deploy/", views.deploy, name="deploy"),
    path("p/<slug:slug>/deploy/exports/<int:pk>/", views.export_job, name="export-job"),
    path("p/<slug:slug>/deploy/promote/", views.promote, name="promote"),
    path("p/<slug:slug>/deploy/rollback/", views.rollback, name="rollback"),
    path("p/<slug:slug>/deploy/tokens/new/", views.token_create, name="token-create"),
    path("p/<slug:slug>/deploy/tokens/<int:pk>/revoke/", views.token_revoke, name="token-revoke"),
    path("p/<slug:slug>/monitor/", views.monitor, name="monitor"),
    path("p/<slug:slug>/cost/", views.cost, name="cost"),
    path("p/<slug:slug>/review-pays/", views.review_value, name="review-value"),
]
