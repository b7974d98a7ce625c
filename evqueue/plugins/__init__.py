"""Notification plugins shipped with evqueue, in the original's plugin zip format."""
