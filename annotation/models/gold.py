"""Gold sets: frozen, versioned examples with verified answers that every evaluation uses."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.db import models
from django.utils import timezone

from annotation.models.examples import Example, ImportBatch
from annotation.models.projects import Project


class FrozenGoldSetError(Exception):
    """A frozen gold set version never changes."""


class SyntheticGoldError(ValueError):
    """Synthetic examples never enter a gold set."""


class GoldSetQuerySet(models.QuerySet):
    def frozen(self) -> GoldSetQuerySet:
        return self.filter(frozen_at__isnull=False)

    def frozen_version(self, version: int | None = None) -> GoldSet | None:
        """The frozen version numbered `version`, or the latest frozen one: the one selector."""
        frozen = self.frozen()
        return frozen.filter(version=version).first() if version else frozen.order_by("-version").first()


class GoldSet(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="gold_sets")
    version = models.PositiveIntegerField()
    note = models.TextField(blank=True)
    examples = models.ManyToManyField(Example, through="GoldSetItem", related_name="gold_sets")

    objects = GoldSetQuerySet.as_manager()
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    frozen_at = models.DateTimeField(null=True, blank=True)
    frozen_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # A version imported from a file whose labels a lead attests are already
    # verified (no blind double labelling): who said so, when, and which file.
    attested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    attested_at = models.DateTimeField(null=True, blank=True)
    attested_file = models.CharField(max_length=255, blank=True)
    attested_sha256 = models.CharField(max_length=64, blank=True)
    import_batch = models.ForeignKey(
        ImportBatch, null=True, blank=True, on_delete=models.SET_NULL, related_name="gold_sets"
    )

    class Meta:
        ordering = ["project", "-version"]
        constraints = [models.UniqueConstraint(fields=["project", "version"], name="goldset_unique_version")]

    def __str__(self) -> str:
        return f"{self.project} gold v{self.version}"

    @property
    def is_frozen(self) -> bool:
        return self.frozen_at is not None

    @property
    def is_attested(self) -> bool:
        return self.attested_at is not None

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self.pk and GoldSet.objects.filter(pk=self.pk, frozen_at__isnull=False).exists():
            raise FrozenGoldSetError(f"Gold set v{self.version} is frozen and cannot change.")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any):
        if self.is_frozen:
            raise FrozenGoldSetError(f"Gold set v{self.version} is frozen and cannot be deleted.")
        return super().delete(*args, **kwargs)

    def freeze(self, *, user) -> None:
        if self.is_frozen:
            raise FrozenGoldSetError(f"Gold set v{self.version} is already frozen.")
        self.frozen_at = timezone.now()
        self.frozen_by = user
        GoldSet.objects.filter(pk=self.pk).update(frozen_at=self.frozen_at, frozen_by=user)


class GoldSetItemQuerySet(models.QuerySet):
    def _refuse_if_frozen(self) -> None:
        if self.filter(gold_set__frozen_at__isnull=False).exists():
            raise FrozenGoldSetError("Items of a frozen gold set version cannot change.")

    def update(self, **kwargs: Any) -> int:
        self._refuse_if_frozen()
        return super().update(**kwargs)

    def delete(self):
        self._refuse_if_frozen()
        return super().delete()


class GoldSetItem(models.Model):
    gold_set = models.ForeignKey(GoldSet, on_delete=models.CASCADE, related_name="items")
    example = models.ForeignKey(Example, on_delete=models.PROTECT, related_name="gold_items")
    answer = models.JSONField(null=True, blank=True, help_text="The gold answer.")

    objects = GoldSetItemQuerySet.as_manager()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["gold_set", "example"], name="goldsetitem_unique")]

    def __str__(self) -> str:
        return f"{self.gold_set}: {self.answer!r}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if GoldSet.objects.filter(pk=self.gold_set_id, frozen_at__isnull=False).exists():
            raise FrozenGoldSetError("A frozen gold set version cannot gain or change items.")
        if Example.objects.filter(pk=self.example_id, source=Example.Source.SYNTHETIC).exists():
            # A gold set measures the real task; text the LLM wrote never enters one.
            raise SyntheticGoldError("Synthetic examples can never enter a gold set.")
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any):
        if GoldSet.objects.filter(pk=self.gold_set_id, frozen_at__isnull=False).exists():
            raise FrozenGoldSetError("A frozen gold set version cannot lose items.")
        return super().delete(*args, **kwargs)
