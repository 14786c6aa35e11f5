"""Errors a user can cause. The CLI turns these into one line and exit status 2."""


class UserError(Exception):
    """Bad input from the user: unknown name, malformed file, impossible ratio, missing dataset."""


class GenomeError(UserError):
    """A genome that does not describe a valid architecture. The message names the field."""

    def __init__(self, field: str, problem: str):
        self.field = field
        self.problem = problem
        super().__init__(f"{field}: {problem}" if field else problem)
