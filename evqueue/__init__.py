"""evqueue: a wire-compatible Python reimplementation of the evQueue 3.3 job scheduler."""

VERSION = "3.3"
