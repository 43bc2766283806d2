"""Query expressions the ORM lacks, for the review page's hot path (issue #25: a verdict and
the next card in at most 10 queries, without paying for it in Python)."""

from __future__ import annotations

from django.db import models

# (key, vendor) -> (sql, params), filled on first use per process.
_COMPILED: dict[tuple[str, str], tuple[str, tuple]] = {}


class JSONRows(models.Aggregate):
    """The grouped rows as one JSON array (PostgreSQL's JSONB_AGG, SQLite's JSON_GROUP_ARRAY)."""

    function = "JSONB_AGG"
    output_field = models.JSONField()

    def as_sqlite(self, compiler, connection, **extra_context):
        return super().as_sql(compiler, connection, function="JSON_GROUP_ARRAY", **extra_context)


class CountOf(models.Subquery):
    """``SELECT COUNT(*)`` over a queryset, as a value in another query's SELECT."""

    template = "(SELECT COUNT(*) FROM (%(subquery)s) counted)"
    output_field = models.IntegerField()


class CompiledOnce(models.Expression):
    """A correlated subquery on `model`'s rows (what `build()` returns, an expression with
    OuterRef("pk") and no per-request value) that the ORM compiles once per database vendor.

    Compiling a subquery annotation costs 1-3 ms of Python a request, more than the query it
    saves (bench/README.md, review queue); the SQL it writes never changes, so it is kept.
    Where the outer query's table is not `model`'s own (a join renamed it), it is compiled
    as usual."""

    def __init__(self, key: str, model, build, output_field):
        super().__init__(output_field=output_field)
        self.key, self.model, self.build = key, model, build

    def as_sql(self, compiler, connection):
        if compiler.query.get_initial_alias() != self.model._meta.db_table:
            return compiler.compile(self.build().resolve_expression(compiler.query))
        cache_key = (self.key, connection.vendor)
        if cache_key not in _COMPILED:
            query = self.model.objects.annotate(compiled=self.build()).query
            sql, params = query.get_compiler(connection=connection).compile(query.annotations["compiled"])
            _COMPILED[cache_key] = (sql, tuple(params))
        return _COMPILED[cache_key]
