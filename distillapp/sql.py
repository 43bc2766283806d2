"""Query expressions the ORM lacks, and queries compiled once, for the review page's hot path
(issue #25: a verdict and the next card in at most 10 queries, without paying for it in Python)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

from django.db import connection, models

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


# A stand-in per parameter type, unlike any value a query of this app holds: `n` numbers the
# query's parameters. Integers stay in the range of a 32-bit column (the ORM drops a filter
# on a value its column cannot hold); a list stands for ids, one stand-in each.
_STAND_INS: dict[type, Callable[[int], object]] = {
    int: lambda n: -1_000_000_000 - 1000 * n,
    str: lambda n: f"\x1fstand-in {n}\x1f",
    dt.datetime: lambda n: dt.datetime(1900, 1, 1, tzinfo=dt.UTC) + dt.timedelta(days=n),
    list: lambda n: -1_000_000_000 - 1000 * n,
}


@dataclass(frozen=True)
class _Compiled:
    sql: str
    params: tuple
    # (position in params, parameter, index in a list, the type the backend gave the stand-in)
    slots: tuple[tuple[int, str, int, type], ...]
    columns: tuple[str, ...]  # each column's name: the field's attname or the annotation's alias
    # (position, converters, expression), as the compiler made them: bound to the connection
    # that compiled them, they read only its settings (SQLite's time zone), every connection's.
    converters: tuple
    model: type[models.Model] | None  # model rows: the model, and where its fields are
    fields: tuple[int, int] = (0, 0)
    is_wider: bool = False  # the SQL selects more columns than the result has (for its order)


class Prepared:
    """A query the ORM builds and compiles once per process and database vendor, then runs
    with each call's values.

    Building and compiling a queryset costs 0.3-3 ms of Python a query, often more than the
    database takes to answer it (bench/README.md, review queue). ``build(**params)`` returns
    the queryset given a stand-in value for each parameter (``Prepared(build, project=int,
    now=dt.datetime)``); the stand-ins are found among the compiled SQL's parameters, and
    each call puts its own values there. A stand-in the ORM leaves out or rewrites (an
    ``icontains``) is refused at the first call, so a query that cannot be kept this way
    fails its tests rather than returning another query's rows.

    A ``list`` parameter (of ids, for ``__in``) is compiled for the next power of two of its
    length, the list filled up with its last id (``IN`` and ``NOT IN`` ignore repeats), so a
    few shapes serve every length.

    Only whole results are offered (``objects`` for a model queryset, ``rows`` for one of
    values): a queryset's ``.first()`` or ``.filter()`` would change the SQL that was kept.
    """

    def __init__(self, build: Callable[..., models.QuerySet], **params: type):
        unknown = [name for name, kind in params.items() if kind not in _STAND_INS]
        if unknown:
            raise TypeError(f"No stand-in for the parameters {unknown}: int, str, datetime or list.")
        self.build, self.params = build, params
        self._compiled: dict[tuple, _Compiled] = {}

    def objects(self, **values) -> list:
        """The model instances the queryset returns, with their annotations."""
        compiled, rows = self._run(values)
        start, end = compiled.fields
        names = compiled.columns[start:end]
        objects = []
        for row in rows:
            obj = compiled.model.from_db(connection.alias, names, row[start:end])
            for name, value in zip(compiled.columns[end:], row[end:], strict=True):
                setattr(obj, name, value)
            objects.append(obj)
        return objects

    def rows(self, **values) -> list[dict]:
        """Each row as a dict by column: the field's attname or the annotation's alias."""
        compiled, rows = self._run(values)
        return [dict(zip(compiled.columns, row, strict=True)) for row in rows]

    def _run(self, values: dict) -> tuple[_Compiled, list[list]]:
        lists = {name: values[name] for name, kind in self.params.items() if kind is list}
        shape = tuple(_padded_length(len(ids)) for ids in lists.values())
        compiled = self._compiled.get((connection.vendor, shape)) or self._compile(shape)
        params = list(compiled.params)
        for position, name, index, kind in compiled.slots:
            value = values[name]
            if name in lists:
                value = kind(value[min(index, len(value) - 1)])
            elif self.params[name] is dt.datetime:
                value = connection.ops.adapt_datetimefield_value(value)
            else:
                value = kind(value)
            params[position] = value
        with connection.cursor() as cursor:
            cursor.execute(compiled.sql, params)
            rows = cursor.fetchall()
        if compiled.is_wider:
            rows = [row[: len(compiled.columns)] for row in rows]
        if not compiled.converters:
            return compiled, rows
        rows = [list(row) for row in rows]
        for row in rows:
            for position, converters, expression in compiled.converters:
                for converter in converters:
                    row[position] = converter(row[position], expression, connection)
        return compiled, rows

    def _compile(self, shape: tuple[int, ...]) -> _Compiled:
        stand_ins, lengths = {}, iter(shape)
        for n, (name, kind) in enumerate(self.params.items()):
            stand_in = _STAND_INS[kind]
            stand_ins[name] = [stand_in(n) - i for i in range(next(lengths))] if kind is list else stand_in(n)
        queryset = self.build(**stand_ins)
        compiler = queryset.query.get_compiler(connection=connection)
        sql, params = compiler.as_sql()
        found = {}
        for name, stand_in in stand_ins.items():
            for index, value in enumerate(stand_in if isinstance(stand_in, list) else [stand_in]):
                if isinstance(value, dt.datetime):
                    value = connection.ops.adapt_datetimefield_value(value)
                found[_kind(value), value] = (name, index)
        slots = tuple(
            (position, *found[_kind(param), param], type(param))
            for position, param in enumerate(params)
            if (_kind(param), param) in found
        )
        missing = {name for name, _ in found.values()} - {name for _, name, _, _ in slots}
        if missing:
            raise ValueError(f"The compiled query leaves out or rewrites the parameters {sorted(missing)}.")
        select = compiler.select[: compiler.col_count]
        columns = tuple(alias or expression.target.attname for expression, _, alias in select)
        klass_info = compiler.klass_info if queryset._iterable_class is models.query.ModelIterable else None
        if klass_info and klass_info.get("related_klass_infos"):
            raise ValueError("A prepared query reads no related rows (select_related).")
        compiled = _Compiled(
            sql=sql,
            params=tuple(params),
            slots=slots,
            columns=columns,
            converters=tuple(
                (position, tuple(converters), expression)
                for position, (converters, expression) in compiler.get_converters(
                    [expression for expression, _, _ in select]
                ).items()
            ),
            model=klass_info["model"] if klass_info else None,
            fields=(klass_info["select_fields"][0], klass_info["select_fields"][-1] + 1)
            if klass_info
            else (0, 0),
            is_wider=compiler.has_extra_select,
        )
        self._compiled[(connection.vendor, shape)] = compiled
        return compiled


def _kind(value) -> type:
    """The value's type, an int for PostgreSQL's typed integers (psycopg's ``Int4``...)."""
    return int if isinstance(value, int) and not isinstance(value, bool) else type(value)


def _padded_length(n: int) -> int:
    return 0 if n == 0 else 1 << (n - 1).bit_length()
