"""A port outside 0-65535 is refused, not taken modulo 65536 by the OS."""

from __future__ import annotations

import pytest
from typer import Typer
from typer.testing import CliRunner

from entroguard.serve.cli import serve_command
from entroguard.serve.runner import bind_socket

cli = Typer()
cli.command("serve")(serve_command)
cli.command("other")(lambda: None)


@pytest.mark.parametrize("port", ["70000", "-1", "65536"])
def test_serve_refuses_a_port_out_of_range(port):
    result = CliRunner().invoke(cli, ["serve", "--model", "any", "--port", port])
    assert result.exit_code == 2
    assert "Invalid value for '--port'" in result.output
    assert "65535" in result.output or "greater than or equal to 0" in result.output


def test_bind_socket_refuses_a_port_out_of_range():
    with pytest.raises(ValueError, match="outside 0-65535"):
        bind_socket("127.0.0.1", 70000)
