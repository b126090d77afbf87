"""The tool-using agent: tools from typed functions, built-in tools, and the loop that runs them."""

from internlocal.agent.loop import Agent, AgentStep
from internlocal.agent.tools import Tool, ToolError, tool

__all__ = ["Agent", "AgentStep", "Tool", "ToolError", "tool"]
