"""Spark row predicates for quarantine: the rows GX counts as unexpected, as a Column we can split on.

GX reports how many rows break a rule, never which rows to keep: the split is ours. For each expectation type
that can quarantine, :func:`unexpected` builds a boolean Column that mirrors GX 1.24's own Spark metric for
that type (its null handling, ``ignore_row_if`` and ``where`` domain included), so the rows removed are the
rows GX counted - the gate checks that the two counts agree and fails the rule when they do not.

Types without a row meaning (row counts, means, distinct-value sets...) are not here: a suite asking to
quarantine on them fails at load. Importing this module imports neither Spark nor GX.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyspark.sql import Column

    from pipelines.quality.suites import Rule

# (kwargs, rows in the domain) -> unexpected (may be null: null counts as "not unexpected", as in GX's filter)
_Builder = Callable[[Mapping[str, Any], "Column"], "Column"]


def _col(kwargs: Mapping[str, Any], key: str = "column") -> Column:
    from pyspark.sql import functions as F

    return F.col(kwargs[key])


def _bounds(value: Column, kwargs: Mapping[str, Any]) -> Column:
    """``value`` within [min_value, max_value] (each optional, strict_min / strict_max), as GX's Spark metric."""
    from pyspark.sql import functions as F

    low, high = kwargs.get("min_value"), kwargs.get("max_value")
    checks = []
    if low is not None:
        checks.append(value > F.lit(low) if kwargs.get("strict_min") else value >= F.lit(low))
    if high is not None:
        checks.append(value < F.lit(high) if kwargs.get("strict_max") else value <= F.lit(high))
    inside = checks[0]
    for check in checks[1:]:
        inside = inside & check
    return inside


def _not_null(kwargs: Mapping[str, Any], _domain: Column) -> Column:
    return _col(kwargs).isNull()


def _null(kwargs: Mapping[str, Any], _domain: Column) -> Column:
    return _col(kwargs).isNotNull()


def _in_set(kwargs: Mapping[str, Any], _domain: Column) -> Column:
    column = _col(kwargs)
    return column.isNotNull() & ~column.isin(list(kwargs["value_set"]))


def _not_in_set(kwargs: Mapping[str, Any], _domain: Column) -> Column:
    column = _col(kwargs)
    return column.isNotNull() & column.isin(list(kwargs["value_set"]))


def _match_regex(kwargs: Mapping[str, Any], _domain: Column) -> Column:
    column = _col(kwargs)
    return column.isNotNull() & ~column.rlike(kwargs["regex"])


def _not_match_regex(kwargs: Mapping[str, Any], _domain: Column) -> Column:
    column = _col(kwargs)
    return column.isNotNull() & column.rlike(kwargs["regex"])


def _between(kwargs: Mapping[str, Any], _domain: Column) -> Column:
    column = _col(kwargs)
    return column.isNotNull() & ~_bounds(column, kwargs)


def _lengths_between(kwargs: Mapping[str, Any], _domain: Column) -> Column:
    from pyspark.sql import functions as F

    column = _col(kwargs)
    return column.isNotNull() & ~_bounds(F.length(column), kwargs)


def _lengths_equal(kwargs: Mapping[str, Any], _domain: Column) -> Column:
    from pyspark.sql import functions as F

    column = _col(kwargs)
    return column.isNotNull() & (F.length(column) != F.lit(kwargs["value"]))


def _pair_ignored(kwargs: Mapping[str, Any]) -> Column:
    from pyspark.sql import functions as F

    a, b = _col(kwargs, "column_A"), _col(kwargs, "column_B")
    mode = kwargs.get("ignore_row_if", "both_values_are_missing")
    if mode == "both_values_are_missing":
        return a.isNull() & b.isNull()
    if mode == "either_value_is_missing":
        return a.isNull() | b.isNull()
    return F.lit(False)  # "neither"


def _pair_greater(kwargs: Mapping[str, Any], _domain: Column) -> Column:
    a, b = _col(kwargs, "column_A"), _col(kwargs, "column_B")
    greater = (a >= b) | a.eqNullSafe(b) if kwargs.get("or_equal") else a > b
    return ~_pair_ignored(kwargs) & ~greater


def _pair_equal(kwargs: Mapping[str, Any], _domain: Column) -> Column:
    a, b = _col(kwargs, "column_A"), _col(kwargs, "column_B")
    return ~_pair_ignored(kwargs) & ~a.eqNullSafe(b)


def _unique(kwargs: Mapping[str, Any], domain: Column) -> Column:
    """Every copy of a value seen more than once among the domain's non-null values (GX flags all copies)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    column = _col(kwargs)
    counted = domain & column.isNotNull()
    copies = F.count(F.when(counted, F.lit(1))).over(Window.partitionBy(column))
    return counted & (copies > 1)


def _compound_unique(kwargs: Mapping[str, Any], domain: Column) -> Column:
    """Every copy of a key seen more than once; nulls compare equal (GX partitions by a struct of the columns)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    columns = [F.col(name) for name in kwargs["column_list"]]
    mode = kwargs.get("ignore_row_if", "all_values_are_missing")
    if mode == "all_values_are_missing":
        ignored = F.lit(True)
        for column in columns:
            ignored = ignored & column.isNull()
    elif mode == "any_value_is_missing":
        ignored = F.lit(False)
        for column in columns:
            ignored = ignored | column.isNull()
    else:  # "never"
        ignored = F.lit(False)
    counted = domain & ~ignored
    copies = F.count(F.when(counted, F.lit(1))).over(Window.partitionBy(F.struct(*columns)))
    return counted & (copies > 1)


_BUILDERS: dict[str, _Builder] = {
    "expect_column_values_to_not_be_null": _not_null,
    "expect_column_values_to_be_null": _null,
    "expect_column_values_to_be_in_set": _in_set,
    "expect_column_values_to_not_be_in_set": _not_in_set,
    "expect_column_values_to_match_regex": _match_regex,
    "expect_column_values_to_not_match_regex": _not_match_regex,
    "expect_column_values_to_be_between": _between,
    "expect_column_value_lengths_to_be_between": _lengths_between,
    "expect_column_value_lengths_to_equal": _lengths_equal,
    "expect_column_pair_values_a_to_be_greater_than_b": _pair_greater,
    "expect_column_pair_values_to_be_equal": _pair_equal,
    "expect_column_values_to_be_unique": _unique,
    "expect_compound_columns_to_be_unique": _compound_unique,
}
QUARANTINE_TYPES = frozenset(_BUILDERS)


def unexpected(rule: Rule) -> Column:
    """True exactly on the rows GX counts as unexpected for ``rule``; never null (so splits partition rows)."""
    from pyspark.sql import functions as F

    domain = F.coalesce(F.expr(rule.where), F.lit(False)) if rule.where else F.lit(True)
    return domain & F.coalesce(_BUILDERS[rule.type](rule.kwargs, domain), F.lit(False))


def offending_values(rule: Rule) -> Column:
    """``column=value, ...`` of the columns ``rule`` checks, for a quarantined row's ``_reason``."""
    from pyspark.sql import functions as F

    parts = [
        F.concat(F.lit(f"{name}="), F.coalesce(F.col(name).cast("string"), F.lit("null"))) for name in rule.columns()
    ]
    return F.concat_ws(", ", *parts)
