"""The single exception type of the policy package."""

from __future__ import annotations

from ..errors import MCPPyodideError


class PolicyError(MCPPyodideError):
    """A policy file is unusable; the message names the file, the place and the problem.

    Loading is all-or-nothing: when this is raised no part of the file is applied,
    so a broken policy can never leave the server half-restricted.
    """

    def __init__(self, source: str, place: str, problem: str) -> None:
        self.source = source
        self.place = place
        self.problem = problem
        super().__init__(f"{source}: {place}: {problem}")
