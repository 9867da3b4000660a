"""Tricky bodies: multipart with files, forms, raw bytes, image and PDF responses, Swagger 2.0, OAS 3.1.

Same approach as test_tricky_specs.py (whose helpers these tests use): each call goes through the
catalog to the echo mock, which must accept it and echo exactly what was given.
"""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from converter.catalog import build_catalog
from converter.config import load_settings
from tests.test_tricky_specs import SPECS, call, serve, tools

pytestmark = pytest.mark.anyio

# a real 1x1 PNG
PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")
# a PDF as most producers write it: the second line marks the file as binary
PDF = b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n"



def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def file_facts(data: bytes, content_type: str | None) -> dict[str, Any]:
    """What the echo mock shows of an uploaded file (less its file name, which the spec does not fix)."""
    return {"content_type": content_type, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def without_filenames(body: dict[str, Any]) -> dict[str, Any]:
    return {k: {f: x for f, x in v.items() if f != "filename"} if isinstance(v, dict) and "sha256" in v else v
            for k, v in body.items()}


# -- multipart.yaml -------------------------------------------------------------------------------


async def test_multipart_upload_sends_the_file_bytes_text_and_json_fields(tmp_path: Path) -> None:
    metadata = {"author": "Zoë", "keywords": ["tax", "2024"]}
    async with serve("multipart.yaml", tmp_path) as (catalog, mock):
        schema = tools(catalog)["uploadDocument"].input_schema
        assert list(schema["properties"]) == ["folderId", "file", "title", "pages", "labels", "metadata"]
        assert schema["required"] == ["folderId", "file", "title"]
        assert schema["properties"]["file"] == {"type": "string", "contentEncoding": "base64",
                                                "description": "The scanned page (File content, base64-encoded.)"}
        echo, _ = await call(catalog, mock, "uploadDocument", {
            "folderId": "Zoë's inbox", "file": b64(PNG), "title": "Scan – page 1", "pages": 3, "metadata": metadata})
    assert echo["parameters"]["path"] == {"folderId": "Zoë's inbox"}
    assert echo["content_type"].startswith("multipart/form-data; boundary=")
    assert without_filenames(echo["body"]) == {"file": file_facts(PNG, "image/png"), "title": "Scan – page 1", "pages": 3,
                            "metadata": metadata}
    assert sorted(part["name"] for part in echo["parts"]) == ["file", "metadata", "pages", "title"]


async def test_multipart_array_fields_are_sent_as_one_part_per_item(tmp_path: Path) -> None:
    async with serve("multipart.yaml", tmp_path) as (catalog, mock):
        echo, _ = await call(catalog, mock, "uploadDocument", {
            "folderId": "inbox", "file": b64(PNG), "title": "t", "labels": ["tax", "2024"]})
    assert echo["body"]["labels"] == ["tax", "2024"]


async def test_multipart_object_fields_are_sent_as_application_json_parts(tmp_path: Path) -> None:
    async with serve("multipart.yaml", tmp_path) as (catalog, mock):
        echo, _ = await call(catalog, mock, "uploadDocument", {
            "folderId": "inbox", "file": b64(PNG), "title": "t", "metadata": {"author": "ada"}})
    assert {p["name"]: p["content_type"] for p in echo["parts"]}["metadata"] == "application/json"


async def test_multipart_body_without_a_file_is_still_multipart(tmp_path: Path) -> None:
    async with serve("multipart.yaml", tmp_path) as (catalog, mock):
        echo, _ = await call(catalog, mock, "updateDocument", {"folderId": "inbox", "documentId": 3, "title": "New"})
    assert echo["content_type"].startswith("multipart/form-data") and echo["body"] == {"title": "New"}


async def test_a_required_multipart_body_with_no_field_given_is_a_clear_tool_error(tmp_path: Path) -> None:
    # RFC 2046: a multipart body has at least one part, so there is no valid empty one to send.
    async with serve("multipart.yaml", tmp_path) as (catalog, mock):
        result = await catalog.call_tool("updateDocument", {"folderId": "inbox", "documentId": 3})
        assert mock.answers == []
    assert result.is_error
    assert result.content[0].text == ("Invalid arguments for tool 'updateDocument' at $: give at least one of: "
                                      "file, title")


async def test_form_urlencoded_and_raw_byte_bodies(tmp_path: Path) -> None:
    form = {"username": "ada@example.com", "password": "p&ss=word +1%", "remember": True, "scope": ["read", "write"]}
    blob = bytes(range(256))
    async with serve("multipart.yaml", tmp_path) as (catalog, mock):
        assert tools(catalog)["putBlob"].input_schema["properties"]["body"] == {
            "type": "string", "contentEncoding": "base64", "description": "File content, base64-encoded."}
        echo, _ = await call(catalog, mock, "login", form)
        assert echo["content_type"] == "application/x-www-form-urlencoded" and echo["body"] == form
        echo, _ = await call(catalog, mock, "putBlob", {"key": "2024/report v1.bin", "body": b64(blob)})
    assert echo["content_type"] == "application/octet-stream"
    assert echo["parameters"]["path"] == {"key": "2024/report v1.bin"}
    assert echo["body"] == {"filename": None, **file_facts(blob, None)}
    assert mock.log()[-1]["raw_path"] == "/blobs/2024%2Freport%20v1.bin"


# -- image.yaml -----------------------------------------------------------------------------------


def media_app(seen: list[Request]) -> Starlette:
    """Answers like the API of image.yaml: PNG avatars (404 for `nobody`), PDF invoices."""

    async def avatar(request: Request) -> Response:
        seen.append(request)
        if request.path_params["user_id"] == "nobody":
            return JSONResponse({"error": "no such user"}, status_code=404)
        return Response(PNG, media_type="image/png")

    async def invoice(request: Request) -> Response:
        seen.append(request)
        data = PDF if request.path_params["invoice_id"] != "ascii" else PDF.replace(b"%\xe2\xe3\xcf\xd3\n", b"")
        return Response(data, media_type="application/pdf")

    return Starlette(routes=[Route("/users/{user_id}/avatar", avatar), Route("/invoices/{invoice_id}/pdf", invoice)])


async def media_call(name: str, arguments: dict[str, Any], seen: list[Request]) -> Any:
    settings = load_settings(None, spec=str(SPECS / "image.yaml"), upstream_url="http://media.test")
    async with build_catalog(settings, transport=httpx.ASGITransport(app=media_app(seen))) as catalog:
        assert all(plan.output_schema is None for plan in catalog.plans)
        return await catalog.call_tool(name, arguments)


async def test_image_responses_are_image_content_and_pdfs_embedded_resources() -> None:
    seen: list[Request] = []
    avatar = await media_call("getAvatar", {"userId": "ada", "size": 64}, seen)
    assert not avatar.is_error and len(avatar.content) == 1
    image = avatar.content[0]
    assert (image.type, image.mime_type, base64.b64decode(image.data)) == ("image", "image/png", PNG)
    assert seen[-1].headers["accept"] == "image/png" and seen[-1].query_params["size"] == "64"

    invoice = await media_call("downloadInvoice", {"invoiceId": "INV-7"}, seen)
    assert not invoice.is_error and len(invoice.content) == 1 and invoice.content[0].type == "resource"
    resource = invoice.content[0].resource
    assert (resource.mime_type, base64.b64decode(resource.blob)) == ("application/pdf", PDF)
    assert str(resource.uri) == "http://media.test/invoices/INV-7/pdf"
    assert seen[-1].headers["accept"] == "application/pdf"

    missing = await media_call("getAvatar", {"userId": "nobody"}, seen)
    assert missing.is_error
    assert missing.content[0].text == ('Upstream answered HTTP 404 Not Found to GET /users/{userId}/avatar: '
                                       '{"error":"no such user"}')


async def test_a_pdf_without_binary_bytes_is_still_an_embedded_resource() -> None:
    result = await media_call("downloadInvoice", {"invoiceId": "ascii"}, [])
    assert result.content[0].type == "resource" and result.content[0].resource.mime_type == "application/pdf"


# -- swagger2-petstore.yaml -----------------------------------------------------------------------

PET = {"name": "Rex", "petType": "dog", "photoUrls": ["https://img.example/rex.png"],
       "category": {"id": 1, "name": "Dogs", "parent": {"id": 0, "name": "Animals"}},
       "tags": [{"id": 7, "name": "good boy"}], "status": "available", "nickname": None}


async def test_every_swagger2_petstore_tool_sends_what_its_converted_document_accepts(tmp_path: Path) -> None:
    photo = PNG
    calls: list[tuple[str, dict[str, Any]]] = [
        ("listPets", {"limit": 5, "status": ["available", "sold"], "tags": ["good boy", "calm"]}),
        ("updatePet", {**PET, "status": "sold"}),
        ("addPet", PET),
        ("getPetById", {"petId": 42}),
        ("updatePetWithForm", {"petId": 42, "name": "Rex II", "status": "pending"}),
        ("deletePet", {"petId": 42, "api_key": "key-1"}),
        ("uploadFile", {"petId": 42, "additionalMetadata": "front view", "file": b64(photo)}),
        ("getOrders", {"orderIds": [1, 2, 3]}),
    ]
    async with serve("swagger2-petstore.yaml", tmp_path) as (catalog, mock):
        assert list(tools(catalog)) == [name for name, _ in calls]
        add = tools(catalog)["addPet"].input_schema
        assert add["required"] == ["petType", "name", "photoUrls"] and "id" not in add["properties"]  # readOnly
        assert add["properties"]["nickname"] == {"anyOf": [{"type": "string"}, {"type": "null"}]}  # x-nullable
        assert add["$defs"]["Category"]["properties"]["parent"] == {"$ref": "#/$defs/Category"}
        assert tools(catalog)["listPets"].output_schema["properties"]["result"]["items"] == {"$ref": "#/$defs/Pet"}
        upload = tools(catalog)["uploadFile"].input_schema
        assert upload["required"] == ["petId", "file"] and upload["properties"]["file"]["contentEncoding"] == "base64"
        echoes = {name: (await call(catalog, mock, name, arguments))[0] for name, arguments in calls}
    assert echoes["listPets"]["parameters"]["query"] == calls[0][1]
    assert mock.log()[0]["query"] == "limit=5&status=available&status=sold&tags=good%20boy,calm"  # multi, csv
    assert echoes["updatePet"]["body"] == {**PET, "status": "sold"} and echoes["addPet"]["body"] == PET
    assert echoes["getPetById"]["parameters"]["path"] == {"petId": 42}
    assert echoes["updatePetWithForm"]["content_type"] == "application/x-www-form-urlencoded"
    assert echoes["updatePetWithForm"]["body"] == {"name": "Rex II", "status": "pending"}
    assert echoes["deletePet"]["parameters"]["header"] == {"api_key": "key-1"}
    assert without_filenames(echoes["uploadFile"]["body"]) == {"additionalMetadata": "front view",
                                            "file": file_facts(photo, "application/octet-stream")}
    assert echoes["getOrders"]["parameters"]["path"] == {"orderIds": [1, 2, 3]}
    assert mock.log()[-1]["raw_path"] == "/store/orders/1,2,3"


# -- openapi31.yaml -------------------------------------------------------------------------------


async def test_openapi_31_null_types_const_examples_and_ref_siblings(tmp_path: Path) -> None:
    cleared = {"schemaVersion": 2, "displayName": "Ada", "bio": None, "website": "https://ada.example.org/",
               "birthYear": None, "visibility": None}
    filled = {"schemaVersion": 2, "displayName": "Ada Lovelace", "bio": "Mathematician", "birthYear": 1815,
              "visibility": "private"}
    async with serve("openapi31.yaml", tmp_path) as (catalog, mock):
        plan = tools(catalog)["updateProfile"]
        assert plan.input_schema == {
            "type": "object",
            "properties": {
                "handle": {"type": "string", "pattern": "^[a-z0-9_]{3,20}$", "examples": ["ada_lovelace"], "minLength": 1},
                "since": {"type": "integer", "exclusiveMinimum": 0},
                "schemaVersion": {"const": 2, "description": "Always 2 for this API version"},
                "displayName": {"type": "string", "minLength": 1, "examples": ["Ada Lovelace", "Grace Hopper"]},
                "bio": {"description": "Set to null to clear the bio",
                        "anyOf": [{"type": "string", "maxLength": 160}, {"type": "null"}]},
                "website": {"$ref": "#/$defs/Url",
                            "description": "The profile's website (a $ref with a sibling description)"},
                "birthYear": {"anyOf": [{"type": "integer", "minimum": 1800}, {"type": "null"}]},
                "visibility": {"enum": ["public", "private", None]},
            },
            "required": ["handle", "schemaVersion", "displayName"],
            "additionalProperties": False,
            "$defs": {"Url": {"type": "string", "format": "uri"}},
        }
        assert plan.output_schema["required"] == ["operation", "body"]
        echo, result = await call(catalog, mock, "updateProfile", {"handle": "ada_lovelace", "since": 3, **cleared})
        assert echo["body"] == cleared and echo["parameters"]["query"] == {"since": 3}
        assert result.structured_content == echo
        echo, _ = await call(catalog, mock, "updateProfile", {"handle": "ada_lovelace", **filled})
        assert echo["body"] == filled and echo["parameters"]["query"] == {}


async def test_openapi_31_file_fields_are_base64_arguments_sent_as_bytes(tmp_path: Path) -> None:
    async with serve("openapi31.yaml", tmp_path) as (catalog, mock):
        echo, _ = await call(catalog, mock, "uploadPhoto", {"handle": "ada", "caption": "me", "photo": b64(PNG)})
        assert tools(catalog)["uploadPhoto"].input_schema["properties"]["photo"]["contentEncoding"] == "base64"
    assert without_filenames(echo["body"]) == {"caption": "me", "photo": file_facts(PNG, "image/png")}
