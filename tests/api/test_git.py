"""``git`` (errata 21): disabled; the same KO for every ADMIN query, rights checked first."""

from __future__ import annotations

import pytest
from admintest import user_events
from apitest import Api, text

DISABLED = (None, "No git repository is configured, this feature is disabled")


@pytest.mark.parametrize("query", [
    '<git action="list_workflows"/>', '<git action="pull"/>',
    '<git action="save_workflow" name="wf" commit_log="x" force="no"/>',
    '<git action="load_workflow" name="wf"/>', '<git action="get_workflow" name="wf"/>',
    '<git action="remove_workflow" name="wf" commit_log="x"/>', '<git action="nope"/>', '<git/>',
])
async def test_disabled_for_admin(api: Api, query: str) -> None:
    assert await api.ko(query) == DISABLED
    assert text(await api(query)) == (
        '<response error="No git repository is configured, this feature is disabled" '
        'node="localhost" status="KO"/>')
    assert user_events(api) == []


@pytest.mark.parametrize("query", ['<git action="list_workflows"/>', '<git/>'])
async def test_user_profile(api: Api, query: str) -> None:
    bob = await api.add_user("bob")
    assert await api.ko(query, bob) == ("INSUFFICIENT_RIGHTS", "insufficient rights")
