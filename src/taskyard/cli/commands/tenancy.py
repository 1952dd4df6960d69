"""`taskyard tenant …` and `taskyard project …`: list and create tenants and the projects inside them."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from taskyard.cli.commands.common import ApiKey, AsJson, Page, Server, Size, act, connect
from taskyard.cli.commands.display import show_page, when_text
from taskyard.sdk.client import JSONObject

tenant_app = typer.Typer(help="List and create tenants (needs an admin key to create).", no_args_is_help=True)
project_app = typer.Typer(help="List and create the projects of a tenant (needs an admin key to create).",
                          no_args_is_help=True)

TenantOption = Annotated[str, typer.Option("--tenant", help="Tenant id (its GUID)")]
Name = Annotated[str, typer.Argument(help="Name (1 to 255 characters)")]


def _table(items: list[JSONObject]) -> Table:
    table = Table("id", "name", "created")
    for item in items:
        table.add_row(str(item["id"]), escape(str(item["name"])), when_text(item.get("created_at")))
    return table


@tenant_app.command("list")
def tenant_list(page: Page = 1, size: Size = 20,
                server: Server = None, api_key: ApiKey = None, as_json: AsJson = False) -> None:
    """List tenants."""
    with connect(server, api_key) as client:
        result = client.list_tenants(page=page, size=size, sort="created_at", order="asc")
    show_page(result, as_json, "tenants", _table)


@tenant_app.command("create")
def tenant_create(name: Name, server: Server = None, api_key: ApiKey = None, as_json: AsJson = False) -> None:
    """Create a tenant."""
    act(server, api_key, as_json, lambda client: client.create_tenant(name),
        lambda tenant: f"created tenant {tenant['id']} '{escape(str(tenant['name']))}'")


@project_app.command("list")
def project_list(tenant: TenantOption, page: Page = 1, size: Size = 20,
                 server: Server = None, api_key: ApiKey = None, as_json: AsJson = False) -> None:
    """List the projects of a tenant."""
    with connect(server, api_key) as client:
        result = client.list_projects(tenant, page=page, size=size, sort="created_at", order="asc")
    show_page(result, as_json, "projects", _table)


@project_app.command("create")
def project_create(name: Name, tenant: TenantOption,
                   server: Server = None, api_key: ApiKey = None, as_json: AsJson = False) -> None:
    """Create a project in a tenant."""
    act(server, api_key, as_json, lambda client: client.create_project(tenant, name),
        lambda project: f"created project {project['id']} '{escape(str(project['name']))}' "
                        f"in tenant {project['tenant_id']}")
