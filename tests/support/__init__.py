"""Shared test support: real infrastructure, stacks of real service processes, clients."""
