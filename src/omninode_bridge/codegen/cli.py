"""``omninode-generate``: command line of the node generator (click + rich).

Exit codes: 0 success, 1 generation refused (quality gate, existing node,
update conflict), 2 bad input (one line on stderr, nothing written).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from omninode_bridge.codegen.pipeline import (
    GenerateOptions,
    GenerationResult,
    StageResult,
    checked_operations,
    generate,
)
from omninode_bridge.codegen.prompt import NODE_TYPES, check_name, parse_prompt
from omninode_bridge.core import EnumCoreErrorCode, ModelOnexError

BAD_INPUT_CODES = {
    EnumCoreErrorCode.INVALID_INPUT,
    EnumCoreErrorCode.CONTRACT_VALIDATION_ERROR,
    EnumCoreErrorCode.FILE_NOT_FOUND,
    EnumCoreErrorCode.FILE_READ_ERROR,
    EnumCoreErrorCode.PARSING_ERROR,
}
PROG = "omninode-generate"


def fail(message: str, code: int = 2) -> None:
    """Print one line on stderr and exit."""
    click.echo(f"{PROG}: error: {message}", err=True)
    sys.exit(code)


def _progress(console: Console) -> Callable[[StageResult], None]:
    marks = {"ok": "[green]✓[/]", "skipped": "[yellow]-[/]", "failed": "[red]✗[/]"}

    def show(stage: StageResult) -> None:
        if stage.status == "error":
            return
        mark = marks.get(stage.status, "•")
        console.print(
            f"{mark} {stage.number} {stage.name:<22} {stage.duration_ms:>9.2f} ms  [dim]{stage.detail}[/]",
            highlight=False,
        )

    return show


def _print_result(console: Console, result: GenerationResult) -> None:
    if result.confidence is not None:
        console.print(
            f"parsed as {result.node_name} ({result.node_type}, confidence {result.confidence:.2f})",
            markup=False,
            highlight=False,
        )
    for note in result.notes:
        console.print(f"note: {note}", markup=False, highlight=False, soft_wrap=True)
    if result.fidelity:
        console.print(f"fidelity: {result.fidelity}", markup=False, highlight=False, soft_wrap=True)
    table = Table(title=f"{result.node_name} ({result.node_type})", show_lines=False)
    table.add_column("check")
    table.add_column("score", justify="right")
    table.add_column("detail", overflow="fold")
    if result.quality:
        for name, check in result.quality.checks.items():
            score = "skipped" if check.skipped else f"{check.score:.2f}"
            table.add_row(name, score, check.detail[:160])
        table.add_row("[bold]quality[/]", f"[bold]{result.quality.score:.2f}[/]", "gate 0.80")
    console.print(table)
    if result.success and result.quality:
        for reason in result.quality.reasons:
            console.print(f"warning: {reason}", markup=False, highlight=False, soft_wrap=True)
    if result.dry_run:
        _print_dry_run(console, result)
    elif result.success:
        console.print(
            f"[green]wrote {len(result.files)} files to {result.node_dir}[/] in {result.total_ms:.0f} ms"
        )


def _print_dry_run(console: Console, result: GenerationResult) -> None:
    console.print(f"dry run: {len(result.files)} files would be written to {result.node_dir}")
    for rel in result.files:
        console.print(f"  {rel}", highlight=False)
    if result.replaced:
        console.print(f"--force would replace {len(result.replaced)} existing file(s):")
        for rel in result.replaced:
            console.print(f"  {rel}", highlight=False)
    for rel in result.kept:
        console.print(f"  kept (yours, not generated): {rel}", highlight=False)
    console.print(result.diff or "(no differences from what exists)", markup=False, highlight=False)


def _checked(check: Callable[[str], object]) -> Callable[[str], str]:
    """A ``click.prompt`` value_proc: a rejected answer is reported and asked again."""

    def proc(value: str) -> str:
        try:
            check(value.strip())
        except ModelOnexError as err:
            raise click.BadParameter(err.message) from err
        return value.strip()

    return proc


def _interactive(opts: GenerateOptions) -> None:
    """Ask for node type, name and operations; the parsed values are the defaults."""
    parsed = parse_prompt(opts.description, opts.node_type, opts.name)
    click.echo(f"node type guess: {parsed.node_type} (confidence {parsed.confidence:.2f})", err=True)
    opts.node_type = click.prompt(
        "node type", default=parsed.node_type, type=click.Choice(NODE_TYPES), err=True
    )
    if opts.node_type != parsed.node_type:  # operations and name follow the chosen type
        parsed = parse_prompt(opts.description, opts.node_type, None)
    suffix = opts.node_type.capitalize()
    default_name = opts.name if opts.name and opts.name.endswith(suffix) else parsed.name
    node_type = opts.node_type
    opts.name = click.prompt(
        "node name", default=default_name, err=True, value_proc=_checked(lambda n: check_name(n, node_type))
    )
    ops = click.prompt(
        "operations (comma-separated)",
        default=",".join(parsed.operations),
        err=True,
        value_proc=_checked(lambda text: checked_operations(text.split(","))),
    )
    opts.operations = checked_operations(ops.split(","))


EPILOG = """\b
Other commands:
  omninode-generate update NODE_DIR [--conflicts stop|inline] [--dry-run]
      re-render a node on the current templates, 3-way merging hand edits
  omninode-generate answers NODE_DIR [KEY=VALUE ...]
      show or change the answers a node was generated from (then run update)
"""


@click.command(name=PROG, context_settings={"help_option_names": ["-h", "--help"]}, epilog=EPILOG)
@click.argument("description", required=False, default="")
@click.option("--node-type", type=click.Choice(NODE_TYPES), help="effect, compute, reducer or orchestrator")
@click.option("--output-dir", type=click.Path(path_type=Path), default=Path("."), show_default=True)
@click.option("--name", help="class name, e.g. NodeUserProfileEffect")
@click.option("--from-contract", type=click.Path(path_type=Path), help="generate from an ONEX contract.yaml")
@click.option("--interactive", is_flag=True, help="confirm name, type and operations")
@click.option(
    "--enable-intelligence", is_flag=True, help="reuse patterns of similar nodes in the output tree"
)
@click.option("--dry-run", is_flag=True, help="list files and diff, write nothing")
@click.option("--force", is_flag=True, help="replace an existing node")
@click.option("--json", "as_json", is_flag=True, help="print a machine-readable result")
@click.option("--no-test-gate", is_flag=True, help="skip running the generated tests in the gate")
@click.option("--template-dir", type=click.Path(path_type=Path), hidden=True)
def generate_command(
    description: str,
    node_type: str | None,
    output_dir: Path,
    name: str | None,
    from_contract: Path | None,
    interactive: bool,
    enable_intelligence: bool,
    dry_run: bool,
    force: bool,
    as_json: bool,
    no_test_gate: bool,
    template_dir: Path | None,
) -> None:
    """Generate an ONEX node package from DESCRIPTION (or --from-contract FILE)."""
    if from_contract is not None and description:
        fail("give either DESCRIPTION or --from-contract, not both")
    opts = GenerateOptions(
        description=description,
        node_type=node_type,
        name=name,
        output_dir=output_dir,
        from_contract=from_contract,
        enable_intelligence=enable_intelligence,
        dry_run=dry_run,
        force=force,
        run_tests=not no_test_gate,
        template_dir=template_dir,
    )
    console = Console(stderr=True, quiet=as_json)
    try:
        if interactive and from_contract is None:
            _interactive(opts)
        result = generate(opts, progress=_progress(console))
    except ModelOnexError as err:
        fail(err.message, 2 if err.error_code in BAD_INPUT_CODES else 1)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2, sort_keys=True, default=str))
    else:
        _print_result(Console(), result)
    if not result.success:
        fail(f"quality gate failed, nothing written: {result.error}", 1)


def main(argv: list[str] | None = None) -> None:
    """Entry point: ``update NODE_DIR``, ``answers NODE_DIR`` or the generate command."""
    args = list(sys.argv[1:] if argv is None else argv)
    command: click.Command = generate_command
    prog = PROG
    if args and args[0] == "update":
        from omninode_bridge.codegen.update import update_command

        command, prog, args = update_command, f"{PROG} update", args[1:]
    elif args and args[0] == "answers":
        from omninode_bridge.codegen.answers import answers_command

        command, prog, args = answers_command, f"{PROG} answers", args[1:]
    try:
        command.main(args=args, prog_name=prog, standalone_mode=False)
    except click.exceptions.Abort:
        fail("aborted", 1)
    except click.ClickException as err:
        fail(err.format_message(), err.exit_code)


if __name__ == "__main__":
    main()
