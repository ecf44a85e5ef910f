"""Plain-text summary of what a policy allows, for ``mcp-pyodide policy check``."""

from __future__ import annotations

from collections.abc import Sequence

from .model import Condition, Policy, ToolRule


def _condition_line(label: str, condition: Condition) -> str:
    line = f"    {label} {condition.describe()}"
    if condition.reason:
        line += f"  [{condition.reason}]"
    return line


def _tool_lines(policy: Policy, tool: str) -> list[str]:
    if policy.is_hidden(tool):
        return [f"  {tool}: hidden (left out of the tool list; denied if called)"]
    rule: ToolRule | None = policy.rule_for(tool)
    if rule is None:
        if policy.default == "deny":
            return [f"  {tool}: denied (not listed, default deny)"]
        status = "allowed (not listed, default allow)"
        return [f"  {tool}: {status}" + ("" if policy.all_tools_limits else ", no limits")]
    if rule.action == "deny":
        suffix = f": {rule.reason}" if rule.reason else ""
        return [f"  {tool}: denied (action deny){suffix}"]
    status = "allowed after user approval" if rule.action == "require_approval" else "allowed"
    lines = [f"  {tool}: {status}"]
    lines += [f"    limit: {limit.describe()}" for limit in rule.limits]
    lines += [_condition_line("denied if:", c) for c in rule.deny_if]
    lines += [_condition_line("requires:", c) for c in rule.require]
    if len(lines) == 1 and not policy.all_tools_limits:
        lines[0] += ", no conditions or limits"
    return lines


def explain(policy: Policy, tool_names: Sequence[str]) -> str:
    """Describe, tool by tool, what ``policy`` allows for the given server tools.

    Also points out policy entries naming tools the server does not offer,
    which are usually typos that leave the intended tool unrestricted.
    """
    verdict = "allowed" if policy.default == "allow" else "denied"
    lines = [f"Policy {policy.source} (version {policy.version}): unlisted tools are {verdict}."]
    if policy.hide:
        lines.append(f"Hidden: {', '.join(policy.hide)}")
    for limit in policy.all_tools_limits:
        lines.append(f"Limit on all tools together: {limit.describe()}")
    lines.append("Tools:")
    for tool in tool_names:
        lines.extend(_tool_lines(policy, tool))
    known = set(tool_names)
    unknown = [name for name in policy.tools if name not in known]
    unknown += [name for name in policy.hide if name != "*" and name not in known]
    if unknown:
        names = ", ".join(dict.fromkeys(unknown))
        lines.append(f"Warning: the policy names tools this server does not offer: {names}")
    return "\n".join(lines) + "\n"
