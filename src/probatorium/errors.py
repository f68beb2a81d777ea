"""Error types that the CLI turns into one clear line and an exit status."""


class ProbatoriumError(Exception):
    """Base class: the message is shown to the user as one line."""

    exit_code = 2


class UsageError(ProbatoriumError):
    """Bad flags, bad input files, unknown names (exit 2)."""


class InfraError(ProbatoriumError):
    """The environment failed us: a target that never starts, a missing binary (exit 2)."""


class TargetStartError(InfraError):
    """A target process could not be started or never became ready."""


#: Every error line of every command starts with this, whatever the subcommand.
ERROR_PREFIX = "probatorium: error: "


def error_line(message: object) -> str:
    """The one line an error becomes: ``probatorium: error: <message>``."""
    return f"{ERROR_PREFIX}{message}"


def warning_line(message: object) -> str:
    """A warning that does not stop the run: ``probatorium: warning: <message>``."""
    return f"probatorium: warning: {message}"
