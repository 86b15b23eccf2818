"""The simulators' errors, all under one root so callers can catch them together.

SimulatorError
├── MapError          an address map is inconsistent (a bug in a kind's module)
│   └── ConversionError   a map names a unit with no conversion to the canonical unit
├── UnknownKindError  a scenario names a machine kind that does not exist
├── ScenarioError     a scenario file is invalid (every problem, with file:line: field)
├── ServeError        a server could not listen (port taken, address not available)
└── TruthError        the ground truth has no answer for a device, signal or time
"""

from __future__ import annotations


class SimulatorError(Exception):
    """Root of the simulators' errors."""


class MapError(SimulatorError, ValueError):
    """An address map is inconsistent (overlaps, unknown signals, bad bit numbers)."""


class ConversionError(MapError):
    """A map names a unit the simulator cannot convert to the signal's canonical unit."""


class UnknownKindError(SimulatorError, ValueError):
    """A scenario names a machine kind the simulators do not have."""


class ScenarioError(SimulatorError, ValueError):
    """A scenario is invalid; the message lists every problem with file, line and field."""


class ServeError(SimulatorError, OSError):
    """A simulated device's server could not listen; the message names it and its port."""


class TruthError(SimulatorError, LookupError):
    """The truth has no answer: unknown device or signal, or a time before the first record."""
