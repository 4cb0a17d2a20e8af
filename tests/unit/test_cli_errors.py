"""One place turns a SluiceError into the CLI's exit status 2 (ops.cli.SluiceGroup): every
command and subgroup gets it, with the message on stderr and no traceback."""

import click
from click.testing import CliRunner

from ops.cli import SluiceGroup, main
from schemas.errors import JobNotFoundError


def test_a_sluice_error_in_a_subgroup_command_exits_2_with_its_message() -> None:
    @click.group(cls=SluiceGroup)
    def root() -> None:
        pass

    @root.group()
    def things() -> None:
        pass

    @things.command()
    def show() -> None:
        raise JobNotFoundError("nope")

    result = CliRunner().invoke(root, ["things", "show"])
    assert isinstance(things, SluiceGroup)
    assert result.exit_code == 2
    assert result.stderr == "error: no job with id 'nope'\n"


def test_other_errors_are_not_swallowed() -> None:
    @click.group(cls=SluiceGroup)
    def root() -> None:
        pass

    @root.command()
    def broken() -> None:
        raise KeyError("a bug")

    result = CliRunner().invoke(root, ["broken"])
    assert result.exit_code == 1 and isinstance(result.exception, KeyError)


def test_the_real_command_line_refuses_bad_options_with_exit_2() -> None:
    result = CliRunner().invoke(main, ["demo", "--only", "videos"])
    assert result.exit_code == 2
    assert "error: --only takes some of" in result.stderr
    assert isinstance(main.commands["models"], SluiceGroup)
    assert {"train", "runs"} <= set(main.commands)
    assert {"build", "list", "show", "promote", "archive", "share"} <= set(
        main.commands["models"].commands  # type: ignore[attr-defined]
    )
