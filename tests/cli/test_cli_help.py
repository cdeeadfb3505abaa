"""Every command and every option has help text, and `--help` stays instant (no torch or diffusers import)."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Annotated

import pytest
import typer
from typer.core import TyperGroup
from typer.testing import CliRunner

from reportgen.cli import app

runner = CliRunner()
HEAVY = ("torch", "diffusers", "transformers")  # house rule 4: only the modules that run models import these


def command_names(typer_app: typer.Typer) -> list[str]:
    """The names the app registers its commands under, as the command line spells them."""
    group = typer.main.get_command(typer_app)
    assert isinstance(group, TyperGroup)
    return sorted(group.commands)


def missing_help(typer_app: typer.Typer) -> list[str]:
    """Each command without help text, and each of its options and arguments without help, as 'command [param]'."""
    group = typer.main.get_command(typer_app)
    assert isinstance(group, TyperGroup)
    missing = [] if (group.help or "").strip() else ["(app)"]
    for name, command in group.commands.items():
        if not (command.help or "").strip():
            missing.append(name)
        for param in command.params:
            # typer's arguments carry help too (TyperArgument); click's plain Argument has none
            if param.name != "help" and not (getattr(param, "help", None) or "").strip():
                missing.append(f"{name} {param.name}")
    return missing


def test_the_registry_and_the_command_line_agree():
    registered = {info.name or info.callback.__name__.replace("_", "-") for info in app.registered_commands
                  if info.callback is not None}
    assert len(registered) == len(app.registered_commands) and registered == set(command_names(app))
    assert {"render", "analyze", "build", "new-topic", "info", "image"} <= registered


def test_every_command_option_and_argument_has_help():
    assert missing_help(app) == []


def test_missing_help_is_caught():
    bad = typer.Typer(help="An app.")

    @bad.command()
    def documented(count: Annotated[int, typer.Option(help="How many.")] = 1) -> None:
        """Has help."""

    @bad.command()
    def bare(where: Annotated[str, typer.Argument()], count: int = 1) -> None:
        pass

    assert missing_help(bad) == ["bare", "bare where", "bare count"]


@pytest.mark.parametrize("args", [["--help"]] + [[name, "--help"] for name in command_names(app)],
                         ids=lambda args: " ".join(args))
def test_help_exits_zero(args: list[str]):
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


def test_help_imports_no_torch_or_diffusers():
    """Importing the CLI and asking every command for --help loads none of the model libraries."""
    script = (
        "import json, sys\n"
        "import reportgen.cli\n"
        f"after_import = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "from typer.testing import CliRunner\n"
        "from reportgen.cli import app\n"
        "runner = CliRunner()\n"
        "codes = [runner.invoke(app, ['--help']).exit_code]\n"
        "codes += [runner.invoke(app, [name, '--help']).exit_code for name in sys.argv[1:]]\n"
        f"after_help = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "print(json.dumps([after_import, after_help, codes]))\n"
    )
    names = command_names(app)
    done = subprocess.run([sys.executable, "-c", script, *names], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    after_import, after_help, codes = json.loads(done.stdout.strip().splitlines()[-1])
    assert after_import == [] and after_help == []
    assert codes == [0] * (len(names) + 1)
