"""Networks: a Neutron v2.0 subset on the public port (``/network/v2.0/...``, also ``/v2.0/...``).

=========================================  ==========================================
``GET/POST /networks``                      list / create (a VXLAN id is allocated)
``GET/DELETE /networks/<id>``               show / delete (not while servers use it)
``GET/POST /subnets``, ``/subnets/<id>``    IPv4 subnets: cidr, gateway, allocation pool
``GET/POST /ports``, ``/ports/<id>``        MAC (``fa:16:3e:...``) and fixed IP allocated
=========================================  ==========================================

Records live in the ring (``.network`` account, one container per kind),
so any node answers.  Nova's ``POST /servers`` with ``networks=[{"uuid":
...}]`` or ``[{"port": ...}]`` comes here through :meth:`NetworksAPI.server_nics`
(ports for the server, ``device_owner`` ``compute:nova``) and
:meth:`NetworksAPI.bind_host` (the DHCP port of the chosen node); the
agent builds the bridge, the VXLAN tunnel and dnsmasq from what these
return (:mod:`compute_agent.network`).

Addresses are allocated by listing the subnet's ports under a lock in
this process; two proxies allocating in the same subnet at the same
instant could pick the same address (the ring has no compare-and-swap).
"""

from __future__ import annotations

import ipaddress
import logging
import random
import uuid
from collections.abc import Callable
from typing import Any

import trio

from node.http_server import BadRequest, Request, Response
from node.http_client import BackendError
from node.log import log_event
from proxy.auth import Identity
from proxy.compute_http import APIError, caller, empty_response, json_response, read_json, require_dict
from proxy.compute_records import JsonRecords, StoreError
from proxy.images import now_iso

log = logging.getLogger("peerstack.proxy.networks")

ACCOUNT = ".network"
PREFIXES = ("/network/v2.0", "/v2.0")
ROOTS = frozenset({"/network", "/network/"})
VXLAN_MTU = 1450
MAX_VNI = (1 << 24) - 1
DHCP_OWNER = "network:dhcp"
COMPUTE_OWNER = "compute:nova"
KINDS = {"networks": "network", "subnets": "subnet", "ports": "port"}


def _view(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if not k.startswith("_")}


def _name(doc: dict[str, Any]) -> str:
    name = doc.get("name", "")
    if not isinstance(name, str) or len(name) > 255:
        raise APIError(400, "Invalid input for name.")
    return name


def _mac() -> str:
    """A MAC in Neutron's default ``fa:16:3e`` prefix."""
    return "fa:16:3e:" + ":".join(f"{random.randrange(256):02x}" for _ in range(3))


class NetworksAPI:
    """The Neutron handler: ``await api(request)`` for paths :meth:`claims` says are its."""

    def __init__(self, cc, identify: Callable[[Request], Identity | None]) -> None:
        self.identify = identify
        self.records = {kind: JsonRecords(cc, ACCOUNT, kind) for kind in KINDS}
        self._alloc = trio.Lock()

    @staticmethod
    def claims(path: str) -> bool:
        return path in ROOTS or any(path == p or path.startswith(p + "/") for p in PREFIXES)

    async def __call__(self, request: Request) -> Response:
        try:
            if request.path in ROOTS:
                host = request.headers.get("host") or "localhost"
                return json_response(200, {"versions": [{
                    "id": "v2.0", "status": "CURRENT",
                    "links": [{"rel": "self", "href": f"http://{host}/network/v2.0/"}]}]})
            identity = caller(self.identify, request)
            return await self._route(request, identity)
        except APIError as exc:
            return self._error(exc)
        except (StoreError, BackendError) as exc:
            log_event(log, "networks.backend_error", rid=request.request_id, error=str(exc))
            return self._error(APIError(503, "The network service cannot reach the cluster now."))
        except BadRequest as exc:
            return self._error(APIError(400, str(exc)))

    @staticmethod
    def _error(exc: APIError) -> Response:
        kind = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound",
                409: "Conflict"}.get(exc.status, "NeutronError")
        return json_response(exc.status, {"NeutronError": {"type": kind, "message": exc.message,
                                                           "detail": ""}})

    async def _route(self, request: Request, identity: Identity) -> Response:
        prefix = next(p for p in PREFIXES if request.path == p or request.path.startswith(p + "/"))
        parts = [p for p in request.path[len(prefix):].split("/") if p]
        if not parts:
            return json_response(200, {"resources": [
                {"name": s, "collection": c, "links": []} for c, s in KINDS.items()]})
        collection = parts[0].removesuffix(".json")
        if collection == "extensions" and request.method in ("GET", "HEAD"):
            return json_response(200, {"extensions": []})  # none of Neutron's extensions, as a list
        if collection not in KINDS or len(parts) > 2:
            raise APIError(404, "The resource could not be found.")
        method = request.method
        if len(parts) == 1:
            if method in ("GET", "HEAD"):
                return await self.list(collection, request.query, identity)
            if method == "POST":
                body = require_dict(await read_json(request), KINDS[collection])
                create = {"networks": self.create_network, "subnets": self.create_subnet,
                          "ports": self.create_port}[collection]
                return json_response(201, {KINDS[collection]: _view(await create(body, identity))})
            raise APIError(405, "Method not allowed")
        item = await self.get(collection, parts[1], identity)
        if method in ("GET", "HEAD"):
            return json_response(200, {KINDS[collection]: _view(item)})
        if method == "DELETE":
            await {"networks": self.delete_network, "subnets": self.delete_subnet,
                   "ports": self.delete_port}[collection](item)
            return empty_response(204)
        raise APIError(405, "Method not allowed")

    # -- access ----------------------------------------------------------------------

    @staticmethod
    def _visible(record: dict[str, Any], identity: Identity) -> bool:
        return identity.cluster_admin or record.get("project_id") == identity.project_id \
            or bool(record.get("shared"))

    async def get(self, collection: str, item_id: str, identity: Identity) -> dict[str, Any]:
        try:
            valid = str(uuid.UUID(item_id)) == item_id
        except ValueError:
            valid = False
        record = await self.records[collection].get(item_id) if valid else None
        if record is None or not self._visible(record, identity):
            raise APIError(404, f"{KINDS[collection].capitalize()} {item_id} could not be found.")
        return record

    async def list(self, collection: str, query: dict[str, str], identity: Identity) -> Response:
        rows = [r for r in await self.records[collection].all() if self._visible(r, identity)]
        for key, value in query.items():
            if key in ("fields", "limit", "marker", "sort_key", "sort_dir"):
                continue
            rows = [r for r in rows if str(r.get(key)).lower() == value.lower()
                    or (isinstance(r.get(key), bool) and str(r[key]).lower() == value.lower())]
        rows.sort(key=lambda r: (r.get("created_at") or "", r["id"]))
        return json_response(200, {collection: [_view(r) for r in rows]})

    def _base(self, doc: dict[str, Any], identity: Identity) -> dict[str, Any]:
        now = now_iso()
        project = doc.get("project_id") or doc.get("tenant_id") or identity.project_id
        if project != identity.project_id and not identity.cluster_admin:
            raise APIError(403, "Only an admin creates resources for another project.")
        return {"id": str(uuid.uuid4()), "name": _name(doc), "project_id": project,
                "tenant_id": project, "created_at": now, "updated_at": now, "revision_number": 0,
                "description": str(doc.get("description") or ""), "tags": []}

    # -- networks --------------------------------------------------------------------

    async def create_network(self, doc: dict[str, Any], identity: Identity) -> dict[str, Any]:
        used = {n.get("provider:segmentation_id") for n in await self.records["networks"].all()}
        vni = next(v for v in iter(lambda: random.randint(1, MAX_VNI), None) if v not in used)
        record = {**self._base(doc, identity), "status": "ACTIVE", "subnets": [],
                  "admin_state_up": bool(doc.get("admin_state_up", True)),
                  "shared": bool(doc.get("shared", False)), "router:external": False,
                  "mtu": VXLAN_MTU, "provider:network_type": "vxlan",
                  "provider:physical_network": None, "provider:segmentation_id": vni,
                  "port_security_enabled": True, "availability_zones": ["nova"]}
        if record["shared"] and not identity.cluster_admin:
            raise APIError(403, "Only an admin creates shared networks.")
        await self.records["networks"].put(record["id"], record)
        log_event(log, "networks.network_created", network=record["id"], vni=vni)
        return record

    async def _ports_of(self, **match: str) -> list[dict[str, Any]]:
        return [p for p in await self.records["ports"].all()
                if all(p.get(k) == v for k, v in match.items())]

    async def delete_network(self, network: dict[str, Any]) -> None:
        ports = await self._ports_of(network_id=network["id"])
        if any(p.get("device_owner") != DHCP_OWNER for p in ports):
            raise APIError(409, f"Unable to complete operation on network {network['id']}. "
                                "There are one or more ports still in use on the network.")
        for port in ports:
            await self.records["ports"].delete(port["id"])
        for subnet_id in network.get("subnets") or []:
            await self.records["subnets"].delete(subnet_id)
        await self.records["networks"].delete(network["id"])

    # -- subnets ---------------------------------------------------------------------

    async def create_subnet(self, doc: dict[str, Any], identity: Identity) -> dict[str, Any]:
        network = await self.get("networks", str(doc.get("network_id")), identity)
        if str(doc.get("ip_version", 4)) != "4":
            raise APIError(400, "Only IPv4 subnets are supported.")
        try:
            net = ipaddress.IPv4Network(str(doc.get("cidr")))
        except ValueError:
            raise APIError(400, f"Invalid input for cidr: {doc.get('cidr')!r}") from None
        if net.num_addresses < 8:
            raise APIError(400, "The subnet is too small (at least a /29).")
        if network.get("subnets"):
            raise APIError(409, "This network already has a subnet (one per network here).")
        gateway = doc.get("gateway_ip", str(net.network_address + 1))
        try:
            if gateway is not None and ipaddress.IPv4Address(str(gateway)) not in net:
                raise ValueError
        except ValueError:
            raise APIError(400, f"Invalid gateway {gateway!r} for {net}.") from None
        first = net.network_address + (2 if gateway == str(net.network_address + 1) else 1)
        pools = doc.get("allocation_pools") or [{"start": str(first),
                                                "end": str(net.broadcast_address - 1)}]
        for pool in pools:
            try:
                start, end = ipaddress.IPv4Address(pool["start"]), ipaddress.IPv4Address(pool["end"])
                if not (net.network_address < start <= end < net.broadcast_address):
                    raise ValueError
            except (KeyError, TypeError, ValueError):
                raise APIError(400, f"Invalid allocation pool {pool!r} for {net}.") from None
        record = {**self._base(doc, identity), "network_id": network["id"], "ip_version": 4,
                  "cidr": str(net), "gateway_ip": gateway, "allocation_pools": pools,
                  "enable_dhcp": bool(doc.get("enable_dhcp", True)),
                  "dns_nameservers": list(doc.get("dns_nameservers") or []), "host_routes": [],
                  "ipv6_ra_mode": None, "ipv6_address_mode": None, "subnetpool_id": None}
        await self.records["subnets"].put(record["id"], record)
        network["subnets"] = [record["id"]]
        await self.records["networks"].put(network["id"], network)
        return record

    async def delete_subnet(self, subnet: dict[str, Any]) -> None:
        ports = [p for p in await self._ports_of(network_id=subnet["network_id"])
                 if any(ip["subnet_id"] == subnet["id"] for ip in p.get("fixed_ips") or [])]
        if any(p.get("device_owner") != DHCP_OWNER for p in ports):
            raise APIError(409, f"Unable to complete operation on subnet {subnet['id']}: "
                                "one or more ports have an IP allocation from this subnet.")
        for port in ports:
            await self.records["ports"].delete(port["id"])
        await self.records["subnets"].delete(subnet["id"])
        network = await self.records["networks"].get(subnet["network_id"])
        if network is not None:
            network["subnets"] = [s for s in network.get("subnets") or [] if s != subnet["id"]]
            await self.records["networks"].put(network["id"], network)

    # -- ports -----------------------------------------------------------------------

    async def _pick_ip(self, subnet: dict[str, Any], wanted: str | None) -> str:
        taken = {ip["ip_address"] for p in await self._ports_of(network_id=subnet["network_id"])
                 for ip in p.get("fixed_ips") or []}
        taken.add(subnet.get("gateway_ip"))
        net = ipaddress.IPv4Network(subnet["cidr"])
        if wanted is not None:
            try:
                address = ipaddress.IPv4Address(wanted)
            except ValueError:
                raise APIError(400, f"Invalid IP address {wanted!r}.") from None
            if address not in net or address in (net.network_address, net.broadcast_address):
                raise APIError(400, f"IP address {wanted} is not a valid IP for subnet {subnet['id']}.")
            if wanted in taken:
                raise APIError(409, f"IP address {wanted} already allocated in subnet {subnet['id']}")
            return wanted
        for pool in subnet["allocation_pools"]:
            start, end = ipaddress.IPv4Address(pool["start"]), ipaddress.IPv4Address(pool["end"])
            for n in range(int(start), int(end) + 1):
                if str(ipaddress.IPv4Address(n)) not in taken:
                    return str(ipaddress.IPv4Address(n))
        raise APIError(409, f"No more IP addresses available on network {subnet['network_id']}.")

    async def create_port(self, doc: dict[str, Any], identity: Identity) -> dict[str, Any]:
        network = await self.get("networks", str(doc.get("network_id")), identity)
        if not network.get("subnets"):
            raise APIError(400, f"Network {network['id']} has no subnet to allocate from.")
        subnet = await self.records["subnets"].get(network["subnets"][0])
        if subnet is None:
            raise APIError(409, f"The subnet of network {network['id']} is gone.")
        requested = doc.get("fixed_ips") or [{}]
        if not isinstance(requested, list) or len(requested) != 1 or not isinstance(requested[0], dict):
            raise APIError(400, "Invalid input for fixed_ips: one entry (or none) is supported.")
        if requested[0].get("subnet_id") not in (None, subnet["id"]):
            raise APIError(400, f"Subnet {requested[0]['subnet_id']} is not on this network.")
        mac = doc.get("mac_address") or _mac()
        if not isinstance(mac, str) or len(mac.split(":")) != 6:
            raise APIError(400, f"Invalid input for mac_address: {mac!r}")
        record = {**self._base(doc, identity), "mac_address": mac.lower(),
                  "device_id": str(doc.get("device_id") or ""),
                  "device_owner": str(doc.get("device_owner") or "")}
        return await self._add_port(record, subnet, requested[0].get("ip_address"))

    async def _add_port(self, record: dict[str, Any], subnet: dict[str, Any],
                        wanted_ip: str | None) -> dict[str, Any]:
        """Store a port on ``subnet``'s network with an address allocated there."""
        async with self._alloc:
            ip = await self._pick_ip(subnet, wanted_ip)
            record.update({"network_id": subnet["network_id"], "admin_state_up": True,
                           "status": "DOWN", "fixed_ips": [{"subnet_id": subnet["id"], "ip_address": ip}],
                           "binding:host_id": "", "security_groups": [], "allowed_address_pairs": [],
                           "port_security_enabled": True, "binding:vif_type": "bridge"})
            await self.records["ports"].put(record["id"], record)
        return record

    async def delete_port(self, port: dict[str, Any]) -> None:
        if port.get("device_owner") == COMPUTE_OWNER and port.get("device_id"):
            raise APIError(409, f"Port {port['id']} is in use by server {port['device_id']}.")
        await self.records["ports"].delete(port["id"])

    # -- for Nova --------------------------------------------------------------------

    async def server_nics(self, requested: list[Any], server_id: str,
                          identity: Identity) -> list[dict[str, Any]]:
        """Ports for a new server from Nova's ``networks`` list; the NIC descriptions for its agent.

        ``{"uuid": net}`` makes a port (deleted with the server), ``{"port": id}`` takes an
        unused one (kept when the server goes).  ``dhcp_ip`` is filled by :meth:`bind_host`.
        """
        nics = []
        for entry in requested:
            if not isinstance(entry, dict) or not ({"uuid", "port"} & set(entry)):
                raise APIError(400, "Invalid input for field/attribute networks.")
            if entry.get("port"):
                port = await self._get_or_400("ports", str(entry["port"]), identity)
                if port.get("device_id"):
                    raise APIError(409, f"Port {port['id']} is still in use.")
                port["_keep"] = True
            else:
                network = await self._get_or_400("networks", str(entry["uuid"]), identity)
                fixed = [{"ip_address": entry["fixed_ip"]}] if entry.get("fixed_ip") else None
                port = await self.create_port({"network_id": network["id"], "fixed_ips": fixed,
                                               "device_owner": COMPUTE_OWNER}, identity)
            port.update(device_id=server_id, device_owner=COMPUTE_OWNER, status="ACTIVE")
            await self.records["ports"].put(port["id"], port)
            network = await self.records["networks"].get(port["network_id"]) or {}
            subnet = await self.records["subnets"].get(port["fixed_ips"][0]["subnet_id"]) or {}
            nics.append({"port_id": port["id"], "network_id": port["network_id"],
                         "network_name": network.get("name") or port["network_id"],
                         "mac": port["mac_address"], "ip": port["fixed_ips"][0]["ip_address"],
                         "subnet_id": port["fixed_ips"][0]["subnet_id"],
                         "cidr": subnet.get("cidr"), "gateway": subnet.get("gateway_ip"),
                         "vni": network.get("provider:segmentation_id"),
                         "mtu": network.get("mtu", VXLAN_MTU)})
        return nics

    async def _get_or_400(self, collection: str, item_id: str, identity: Identity) -> dict[str, Any]:
        try:
            return await self.get(collection, item_id, identity)
        except APIError:
            raise APIError(400, f"{KINDS[collection].capitalize()} {item_id} could not be found.") from None

    async def bind_host(self, nics: list[dict[str, Any]], node_id: str) -> None:
        """Give each NIC the DHCP address of ``node_id`` on its network (its DHCP port, made once)."""
        for nic in nics:
            device = f"dhcp-{node_id}"
            existing = await self._ports_of(network_id=nic["network_id"], device_id=device)
            if existing:
                port = existing[0]
            else:
                subnet = await self.records["subnets"].get(nic["subnet_id"])
                if subnet is None:
                    raise APIError(409, f"The subnet of network {nic['network_id']} is gone.")
                now = now_iso()
                record = {"id": str(uuid.uuid4()), "name": "", "project_id": subnet["project_id"],
                          "tenant_id": subnet["project_id"], "created_at": now, "updated_at": now,
                          "revision_number": 0, "description": f"DHCP of {node_id}", "tags": [],
                          "mac_address": _mac(), "device_id": device, "device_owner": DHCP_OWNER}
                port = await self._add_port(record, subnet, None)
            nic["dhcp_ip"] = port["fixed_ips"][0]["ip_address"]

    async def release(self, server_id: str) -> None:
        """A deleted server's ports: made for it → deleted, handed to it → free again."""
        for port in await self._ports_of(device_id=server_id, device_owner=COMPUTE_OWNER):
            if port.pop("_keep", False):
                port.update(device_id="", device_owner="", status="DOWN")
                await self.records["ports"].put(port["id"], port)
            else:
                await self.records["ports"].delete(port["id"])
