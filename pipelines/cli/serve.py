"""``serve api`` and ``serve token``: the metrics API over gold and its tenant-scoped tokens (pipelines.serve)."""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.table import Table

from pipelines.cli.render import _say, _settings, console, err_console


def _store(args: argparse.Namespace):
    from pipelines.serve.tokens import TokenStore

    settings = _settings(args)
    return TokenStore(Path(settings.resolve_path(settings.serve.tokens_file)))


def cmd_serve_api(args: argparse.Namespace) -> int:
    from pipelines.serve.api import run_server

    run_server(_settings(args), say=_say, port=args.port)
    return 0


def cmd_token_create(args: argparse.Namespace) -> int:
    from pipelines.serve.tokens import ALL_TENANTS

    if bool(args.tenant) == args.all_tenants:
        raise ValueError("token create: give exactly one of --tenant T or --all-tenants")
    store = _store(args)
    secret = store.create(args.name, ALL_TENANTS if args.all_tenants else args.tenant)
    err_console.print(f"token {args.name!r} created in {store.path}; it is shown once, keep it secret:")
    print(secret)
    return 0


def cmd_token_list(args: argparse.Namespace) -> int:
    table = Table("name", "tenant", "created", title="API tokens (hashes only are stored)")
    for token in _store(args).tokens():
        table.add_row(token.name, "all (operator)" if token.tenant == "*" else token.tenant, token.created_at)
    console.print(table)
    return 0


def cmd_token_revoke(args: argparse.Namespace) -> int:
    store = _store(args)
    store.revoke(args.name)
    err_console.print(f"token {args.name!r} revoked; a running API refuses it from its next request")
    return 0


def add_serve_command(commands: argparse._SubParsersAction) -> None:
    serve = commands.add_parser("serve", help="serve gold and silver: the metrics API, the SQL endpoint, their logins")
    serve_commands = serve.add_subparsers(dest="action", required=True, metavar="ACTION")
    api = serve_commands.add_parser(
        "api", help="the read-only metrics API over gold (JSON/CSV, OpenAPI at /docs) until Ctrl-C"
    )
    api.add_argument("--port", type=int, help="port on serve.host (default serve.api_port; 0: a free port)")
    api.set_defaults(func=cmd_serve_api)
    add_sql_commands(serve_commands)
    token = serve_commands.add_parser("token", help="create, list or revoke API tokens")
    token_commands = token.add_subparsers(dest="token_action", required=True, metavar="TOKEN_ACTION")
    create = token_commands.add_parser("create", help="a new token for one tenant (printed once)")
    create.add_argument("--name", required=True, help="a label to list and revoke it by, e.g. acme-dashboard")
    create.add_argument("--tenant", help="the only tenant the token reads")
    create.add_argument("--all-tenants", action="store_true", help="an operator token: requests name the tenant")
    create.set_defaults(func=cmd_token_create)
    token_commands.add_parser("list", help="the tokens' names and tenants").set_defaults(func=cmd_token_list)
    revoke = token_commands.add_parser("revoke", help="refuse a token from now on")
    revoke.add_argument("name", help="the token's name")
    revoke.set_defaults(func=cmd_token_revoke)


def cmd_serve_sql(args: argparse.Namespace) -> int:
    from pipelines.serve.sql import run_endpoint

    run_endpoint(_settings(args), say=_say, port=args.port)
    return 0


def cmd_sql_user_add(args: argparse.Namespace) -> int:
    import os

    from pipelines.serve.sql import users_file
    from pipelines.serve.tokens import ALL_TENANTS

    if bool(args.tenant) == args.all_tenants:
        raise ValueError("sql-user add: give exactly one of --tenant T or --all-tenants")
    password = os.environ.get(args.password_env) if args.password_env else None
    if args.password_env and not password:
        raise ValueError(f"sql-user add: the environment variable {args.password_env} is empty or not set")
    users = users_file(_settings(args))
    chosen = users.add(args.name, ALL_TENANTS if args.all_tenants else args.tenant, password)
    err_console.print(f"SQL user {args.name!r} added to {users.path}")
    if not password:
        err_console.print("generated password (shown once):")
        print(chosen)
    return 0


def cmd_sql_user_list(args: argparse.Namespace) -> int:
    from pipelines.serve.sql import users_file

    table = Table("name", "tenant", title="SQL endpoint users (hashes only are stored)")
    for user in users_file(_settings(args)).users():
        table.add_row(user.name, "all (operator)" if user.tenant == "*" else user.tenant)
    console.print(table)
    return 0


def cmd_sql_user_remove(args: argparse.Namespace) -> int:
    from pipelines.serve.sql import users_file

    users_file(_settings(args)).remove(args.name)
    err_console.print(f"SQL user {args.name!r} removed; it cannot log in or run another query")
    return 0


def add_sql_commands(serve_commands: argparse._SubParsersAction) -> None:
    sql = serve_commands.add_parser(
        "sql", help="the SQL endpoint (Spark Thrift Server, JDBC/ODBC) over gold and silver until Ctrl-C"
    )
    sql.add_argument("--port", type=int, help="port on serve.host (default serve.sql_port; 0: a free port)")
    sql.set_defaults(func=cmd_serve_sql)
    user = serve_commands.add_parser("sql-user", help="add, list or remove SQL endpoint logins")
    user_commands = user.add_subparsers(dest="user_action", required=True, metavar="USER_ACTION")
    add = user_commands.add_parser("add", help="a login bound to one tenant (password generated unless given)")
    add.add_argument("--name", required=True, help="the login name")
    add.add_argument("--tenant", help="the only tenant whose rows the login sees")
    add.add_argument("--all-tenants", action="store_true", help="an operator login: every tenant's rows")
    add.add_argument("--password-env", help="read the password from this environment variable")
    add.set_defaults(func=cmd_sql_user_add)
    user_commands.add_parser("list", help="logins and their tenants").set_defaults(func=cmd_sql_user_list)
    remove = user_commands.add_parser("remove", help="remove a login")
    remove.add_argument("name", help="the login name")
    remove.set_defaults(func=cmd_sql_user_remove)
