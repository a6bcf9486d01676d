"""The base of every error c2d reports to a user as one line (stdlib only, so every layer can share it)."""


class C2DError(Exception):
    """Bad input, a damaged or foreign file, an engine that is not installed: the message names the problem, and the
    CLI prints it without a traceback. Each subclass also keeps its historical base (RuntimeError or ValueError)."""
