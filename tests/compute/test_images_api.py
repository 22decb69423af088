"""The Glance v2 subset against a live cluster (no VM needed)."""

from __future__ import annotations

import hashlib
import os

import trio


async def test_image_records_and_data(cloud, cluster):
    resp = await cloud.client.post("/v2/images", json={
        "name": "blob", "disk_format": "raw", "container_format": "bare", "tags": ["x"],
        "os_distro": "none"})
    assert resp.status_code == 201, resp.text
    image = resp.json()
    assert image["status"] == "queued" and image["owner"] and image["os_distro"] == "none"
    assert (await cloud.client.get(f"/v2/images/{image['id']}/file")).status_code == 204

    # more than one 64 MiB segment, streamed in chunks of random size
    data = os.urandom(1 << 20) * 70 + b"tail"

    async def body():
        view = memoryview(data)
        while view:
            n = min(len(view), 1 + int.from_bytes(os.urandom(3), "big") % (3 << 20))
            yield bytes(view[:n])
            view = view[n:]

    resp = await cloud.client.put(f"/v2/images/{image['id']}/file", content=body(),
                                  headers={"Content-Type": "application/octet-stream"})
    assert resp.status_code == 204, resp.text
    shown = (await cloud.client.get(f"/v2/images/{image['id']}")).json()
    assert shown["status"] == "active" and shown["size"] == len(data)
    assert shown["checksum"] == hashlib.md5(data).hexdigest()
    assert shown["os_hash_algo"] == "sha512" and shown["os_hash_value"] == hashlib.sha512(data).hexdigest()
    assert not any(k.startswith("_") for k in shown)

    # any node serves it
    other = cluster.nodes[2].public_url
    got = await cloud.client.get(f"{other}/v2/images/{image['id']}/file")
    assert got.status_code == 200 and got.headers["content-md5"] == shown["checksum"]
    assert hashlib.md5(got.content).hexdigest() == shown["checksum"]
    again = await cloud.client.put(f"/v2/images/{image['id']}/file", content=b"x")
    assert again.status_code == 409

    patch = [{"op": "replace", "path": "/name", "value": "renamed"},
             {"op": "add", "path": "/hw_disk_bus", "value": "virtio"},
             {"op": "remove", "path": "/os_distro"}]
    resp = await cloud.client.patch(f"/v2/images/{image['id']}", json=patch, headers={
        "Content-Type": "application/openstack-images-v2.1-json-patch"})
    assert resp.status_code == 200, resp.text
    assert resp.json()["name"] == "renamed" and resp.json()["hw_disk_bus"] == "virtio"
    assert "os_distro" not in resp.json()
    for bad, status in (([{"op": "replace", "path": "/status", "value": "active"}], 403),
                        ([{"op": "replace", "path": "/min_ram", "value": -1}], 400),
                        ([{"op": "remove", "path": "/nope"}], 409),
                        ({"op": "add"}, 400)):
        resp = await cloud.client.patch(f"/v2/images/{image['id']}", json=bad, headers={
            "Content-Type": "application/openstack-images-v2.1-json-patch"})
        assert resp.status_code == status, (bad, resp.text)

    resp = await cloud.client.patch(f"/v2/images/{image['id']}", json=[
        {"op": "replace", "path": "/protected", "value": True}],
        headers={"Content-Type": "application/openstack-images-v2.1-json-patch"})
    assert resp.status_code == 200
    assert (await cloud.client.delete(f"/v2/images/{image['id']}")).status_code == 403
    await cloud.client.patch(f"/v2/images/{image['id']}", json=[
        {"op": "replace", "path": "/protected", "value": False}],
        headers={"Content-Type": "application/openstack-images-v2.1-json-patch"})
    assert (await cloud.client.delete(f"/v2/images/{image['id']}")).status_code == 204
    assert (await cloud.client.get(f"/v2/images/{image['id']}")).status_code == 404


async def test_listing_filters_and_paging(cloud):
    ids = []
    for i in range(5):
        resp = await cloud.client.post("/v2/images", json={
            "name": f"page-{i}", "disk_format": "qcow2" if i % 2 else "raw",
            "container_format": "bare", "tags": ["paging"]})
        ids.append(resp.json()["id"])
        await trio.sleep(1.01)  # distinct created_at seconds: the default sort
    seen = []
    url = "/v2/images?tag=paging&limit=2"
    while url:
        doc = (await cloud.client.get(url)).json()
        assert len(doc["images"]) <= 2
        seen += [i["id"] for i in doc["images"]]
        url = doc.get("next")
    assert seen == list(reversed(ids))
    doc = (await cloud.client.get("/v2/images?tag=paging&disk_format=qcow2&sort=name:asc")).json()
    assert [i["name"] for i in doc["images"]] == ["page-1", "page-3"]
    assert (await cloud.client.get("/v2/images?sort_key=bogus")).status_code == 400
    assert (await cloud.client.get("/v2/images?marker=nope")).status_code == 400


async def test_requests_need_a_token(cloud):
    resp = await cloud.client.get("/v2/images", headers={"X-Auth-Token": "AUTH_tkforged.sig"})
    assert resp.status_code == 401
    resp = await cloud.client.get("/v2.1/servers", headers={"X-Auth-Token": ""})
    assert resp.status_code == 401 and "unauthorized" in resp.json()
    resp = await cloud.client.post("/v2/images", json={"name": "x", "disk_format": "floppy"})
    assert resp.status_code == 400
    resp = await cloud.client.post("/v2/images", content=b"{not json")
    assert resp.status_code == 400
