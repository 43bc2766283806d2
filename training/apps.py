from django.apps import AppConfig


class TrainingConfig(AppConfig):
    name = "training"
    verbose_name = "Training"

    def ready(self) -> None:
        from django.db.models.signals import post_delete, post_save

        from annotation.review.rounds import refresh_due
        from training import serving
        from training.models import ApiToken, ModelVersion, ServingConfig

        # Saves from anywhere (the deploy page, the admin) reach this process's serving
        # cache at once; other processes see them within SERVING_CACHE_SECONDS.
        def forget(**kwargs) -> None:
            serving.forget_cached()

        # A finished review round retrains the quick student that orders the queue: a row
        # written with the verdict, run by the training queue's worker (never in the request).
        def refresh(sender, project, verdicts, **kwargs) -> None:
            from training.services.round_refresh import round_refresh_start

            round_refresh_start(project=project, verdicts=verdicts)

        refresh_due.connect(refresh, dispatch_uid="training-review-round-refresh", weak=False)

        for model in (ApiToken, ModelVersion, ServingConfig):
            post_save.connect(
                forget, sender=model, dispatch_uid=f"serving-forget-save-{model.__name__}", weak=False
            )
            post_delete.connect(
                forget, sender=model, dispatch_uid=f"serving-forget-delete-{model.__name__}", weak=False
            )
