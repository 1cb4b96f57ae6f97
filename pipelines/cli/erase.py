"""``erase``: remove one person from every table (see pipelines.erasure)."""

from __future__ import annotations

import argparse
import os

from pipelines.cli.render import _batch_spark, _say, _settings, console

# Schedulers pass the id in the environment, so it appears in no command line and no task log.
USER_ID_ENV, ANONYMOUS_ID_ENV = "LAKEHOUSE_ERASE_USER_ID", "LAKEHOUSE_ERASE_ANONYMOUS_ID"


def cmd_erase(args: argparse.Namespace) -> int:
    from pipelines.erasure import erase

    settings = _settings(args)
    user_id = args.user_id or os.environ.get(USER_ID_ENV) or None
    anonymous_id = args.anonymous_id or os.environ.get(ANONYMOUS_ID_ENV) or None
    spark = _batch_spark(settings, "erase")
    result = erase(spark, settings, args.tenant, user_id=user_id, anonymous_id=anonymous_id, progress=_say)
    for table, rows in sorted(result.rows_deleted.items()):
        console.print(f"{table}: {rows} row(s) deleted")
    console.print(
        f"gold rebuilt for {len(result.gold_days)} day(s); request {result.request_id} recorded in "
        f"ops.erasure_requests ({result.seconds}s)"
    )
    return 0


def add_erase_command(commands: argparse._SubParsersAction) -> None:
    erase = commands.add_parser("erase", help="GDPR/CCPA erasure of one person from every table")
    erase.add_argument("--tenant", required=True, help="the person's tenant")
    who = erase.add_mutually_exclusive_group()
    who.add_argument("--user-id", help=f"the user id as producers sent it (or ${USER_ID_ENV})")
    who.add_argument("--anonymous-id", help=f"an anonymous visitor id (or ${ANONYMOUS_ID_ENV})")
    erase.set_defaults(func=cmd_erase)
