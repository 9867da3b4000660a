"""tools/list pagination with MCP cursors."""

from __future__ import annotations

import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError

import mock_api
from converter.catalog import build_catalog
from converter.config import load_settings
from converter.server.app import build_server
from converter.server.paging import Pager

pytestmark = pytest.mark.anyio



def _answer(n: int) -> dict:
    return {"tools": [{"name": f"t{i}"} for i in range(n)], "_meta": {"k": 1}}


def _all_pages(pager: Pager, answer: dict) -> list[list[str]]:
    pages, cursor = [], None
    while True:
        page = pager.page(answer, "tools", cursor)
        pages.append([tool["name"] for tool in page["tools"]])
        assert page["_meta"] == {"k": 1}
        cursor = page.get("nextCursor")
        if cursor is None:
            return pages


def test_pages_cover_the_list_once_in_order() -> None:
    assert _all_pages(Pager(4), _answer(10)) == [["t0", "t1", "t2", "t3"], ["t4", "t5", "t6", "t7"], ["t8", "t9"]]
    assert _all_pages(Pager(5), _answer(10)) == [["t0", "t1", "t2", "t3", "t4"], ["t5", "t6", "t7", "t8", "t9"]]
    assert _all_pages(Pager(50), _answer(10)) == [[f"t{i}" for i in range(10)]]
    assert _all_pages(Pager(None), _answer(10)) == [[f"t{i}" for i in range(10)]]
    assert _all_pages(Pager(3), _answer(0)) == [[]]


@pytest.mark.parametrize("cursor", ["nonsense", "", "MDpx", 5, "=" * 100, "OTk5OmFhYWFhYWFhYWFhYQ"])
def test_a_cursor_this_server_did_not_give_is_refused(cursor: object) -> None:
    with pytest.raises(MCPError) as caught:
        Pager(3).page(_answer(10), "tools", cursor)
    assert caught.value.code == -32602 and "Invalid cursor" in caught.value.message


def test_a_cursor_of_a_list_that_changed_is_refused() -> None:
    cursor = Pager(3).page(_answer(10), "tools", None)["nextCursor"]
    assert Pager(3).page(_answer(10), "tools", cursor)["tools"][0] == {"name": "t3"}
    changed = {"tools": [{"name": "other"}, *_answer(10)["tools"][1:]]}
    with pytest.raises(MCPError, match="Invalid cursor"):
        Pager(3).page(changed, "tools", cursor)


def test_without_paging_any_cursor_is_refused() -> None:
    with pytest.raises(MCPError, match="Invalid cursor"):
        Pager(None).page(_answer(3), "tools", "abc")


async def test_the_sdk_client_walks_the_pages_of_a_real_catalog() -> None:
    settings = load_settings(None, spec=str(mock_api.SPEC_PATH), upstream_url="http://mock.test")
    catalog = build_catalog(settings)
    async with catalog, Client(build_server(catalog)) as whole:
        expected = [tool.name for tool in (await whole.list_tools()).tools]
    assert len(expected) == 10
    async with catalog, Client(build_server(catalog, page_size=4)) as client:
        first = await client.list_tools()
        assert len(first.tools) == 4 and first.next_cursor
        names, cursor = [t.name for t in first.tools], first.next_cursor
        while cursor:
            page = await client.list_tools(cursor=cursor)
            names += [t.name for t in page.tools]
            cursor = page.next_cursor
        assert names == expected
        with pytest.raises(MCPError) as caught:
            await client.list_tools(cursor="bogus")
        assert caught.value.code == -32602


def test_page_size_setting_is_validated() -> None:
    from converter.errors import ConfigError

    assert load_settings(None, spec="x.yaml", page_size=7).server.page_size == 7
    with pytest.raises(ConfigError, match="page_size"):
        load_settings(None, spec="x.yaml", page_size=0)
