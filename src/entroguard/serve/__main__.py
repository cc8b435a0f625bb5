"""``python -m entroguard.serve serve|edge ...``: the two commands without the main CLI."""

from __future__ import annotations

import typer

from entroguard.serve.cli import edge_command, serve_command

app = typer.Typer(
    help="entroguard split inference over HTTP.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command("serve")(serve_command)
app.command("edge")(edge_command)

if __name__ == "__main__":
    app()
