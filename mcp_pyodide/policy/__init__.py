"""In-process tool-call policy and rate limiting for mcp-pyodide.

A policy file (JSON, version "1") says which tools are visible, which calls are
allowed, on what argument conditions, how often, and which need the user's
approval. :class:`PolicyEngine` turns it into one :class:`Decision` per call.
"""

from __future__ import annotations

from .audit import AuditLog, audit_record, redact
from .defaults import DEFAULT_POLICY, DEFAULT_POLICY_JSON, default_policy
from .engine import APPROVAL_PREFIX, DENIED_PREFIX, Decision, PolicyEngine
from .errors import PolicyError
from .explain import explain
from .loader import load_policy, parse_policy
from .model import Condition, Limit, Policy, ToolRule

__all__ = [
    "APPROVAL_PREFIX",
    "DEFAULT_POLICY",
    "DEFAULT_POLICY_JSON",
    "DENIED_PREFIX",
    "AuditLog",
    "Condition",
    "Decision",
    "Limit",
    "Policy",
    "PolicyEngine",
    "PolicyError",
    "ToolRule",
    "audit_record",
    "default_policy",
    "explain",
    "load_policy",
    "parse_policy",
    "redact",
]
