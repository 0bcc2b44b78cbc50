"""What a refused command must look like: exit code 2, one `error:` line, no traceback, no leftovers."""

from pathlib import Path

from fia_engine.cli import main


def fails(args: list[str], capsys, message: str) -> None:
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], err


def only_files(folder: Path, expected: set[str]) -> None:
    """Nothing but ``expected`` in ``folder``: no output and no temporary file was left."""
    assert {p.name for p in folder.iterdir()} == expected
