"""`aistack learn …`: learn from the finished tasks now, list the proposals, decide on one."""

from __future__ import annotations

import getpass
import json
from typing import Annotated

import typer
from rich.table import Table

from aistack.contracts import ProposalView
from aistack.ralph_wiggum.cli import call_orchestrator
from aistack.terminal import console

commands = typer.Typer()
learn_app = typer.Typer(
    help="Proposals learned from the tasks' outcomes: `aistack learn` learns now; accept, reject or roll one back.",
    invoke_without_command=True,
)
commands.add_typer(learn_app, name="learn")

Who = Annotated[str, typer.Option("--who", help="Who decides (kept with the decision); default: your login name.")]
Why = Annotated[str | None, typer.Option("--why", help="Why, kept with the decision.")]


def _table(proposals: list[ProposalView], title: str) -> None:
    table = Table(title=title)
    for column in ("id", "status", "kind", "change", "summary"):
        table.add_column(column)
    for p in proposals:
        change = ", ".join(f"{k}={v}" for k, v in p.changes.items()) or ("a task" if p.task else "advice")
        table.add_row(str(p.id), p.status, p.kind, change, p.summary)
    console.print(table)


@learn_app.callback()
def learn(ctx: typer.Context) -> None:
    """Learn from every finished task now and print the proposals made or refreshed."""
    if ctx.invoked_subcommand is not None:
        return
    made = call_orchestrator(lambda client: client.learn())
    if not made:
        console.print("no proposal: too few finished tasks, or nothing to change (RALPH_LEARN_MIN_OUTCOMES)")
        return
    _table(made, f"{len(made)} proposal(s)")


@learn_app.command("proposals")
def proposals(
    status: Annotated[str | None, typer.Option(help="Only this status: open, accepted, rejected, rolled_back, superseded.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the raw JSON, evidence included.")] = False,
) -> None:
    """List the proposals, newest first."""
    found = call_orchestrator(lambda client: client.proposals(status))
    if as_json:
        console.print_json(json.dumps([p.model_dump(mode="json") for p in found]))
        return
    _table(found, "proposals")


def _decide(proposal_id: int, action: str, who: str | None, why: str | None) -> None:
    done = call_orchestrator(lambda client: client.decide_proposal(proposal_id, action, who or getpass.getuser(), why))
    last = done.decisions[-1]
    console.print(f"✓ proposal {done.id} {done.status.replace('_', ' ')} by {last.who}: {done.summary}", highlight=False)
    if last.detail:
        console.print(f"  {last.detail}", highlight=False)


@learn_app.command("accept")
def accept(proposal_id: int, who: Who = "", why: Why = None) -> None:
    """Accept: its settings are written to the .env (with a backup) and applied live; a drafted task is submitted."""
    _decide(proposal_id, "accept", who, why)


@learn_app.command("reject")
def reject(proposal_id: int, who: Who = "", why: Why = None) -> None:
    """Reject it (kept, with who and why)."""
    _decide(proposal_id, "reject", who, why)


@learn_app.command("rollback")
def rollback(proposal_id: int, who: Who = "", why: Why = None) -> None:
    """Put back, in the .env and live, the values an accepted proposal replaced."""
    _decide(proposal_id, "rollback", who, why)
