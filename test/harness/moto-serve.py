"""moto server with one request handled at a time, and Route 53's change batch rules.

DynamoDB applies a conditional write atomically: the condition is checked and
the item changed as one step, so of two writers conditioned on the same
version at most one succeeds. moto's threaded server checks and changes in
separate Python steps without a lock, so under load two such writers can both
succeed, which the lease protocol (lib/core/lease.ts) relies on never
happening. Handling one request at a time restores the service's guarantee;
moto is bound by one interpreter lock anyway, so little throughput is lost.
Connections are still accepted by many threads, and a request body is read in
full before the lock is taken, so a slow client holds nobody up.

Route 53 checks a whole change batch, in order, against the records as they
are, and applies all of it or none: a DELETE must name a record exactly as it
is (weight, TTL, values, health check), and a CREATE must not name one that
exists. The health checker's batches are compare-and-swaps built on that
(docs/architecture.md §6). moto 5.2.5 does not: it accepts a DELETE whose
weight differs (it deletes by SetIdentifier) and checks values only against
its journal of every change ever made (refusing with InvalidInput, not
InvalidChangeBatch); it accepts a CREATE of a record that exists, adding a
duplicate; and it refuses a CREATE that repeats an earlier one although the
same batch deleted that record first. `route53_batches_as_aws` puts Route
53's rules back for every batch with a CREATE or a DELETE; batches of UPSERTs
only are moto's own.

Usage: python moto-serve.py -H HOST -p PORT
"""

import argparse
import copy
import io
import os
import signal
import sys
import threading

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import run_simple


def serialized(app):
    lock = threading.Lock()

    def handle(environ, start_response):
        length = environ.get("CONTENT_LENGTH")
        if length and length.isdigit():
            body = environ["wsgi.input"].read(int(length))
            environ["wsgi.input"] = io.BytesIO(body)
        with lock:
            # Run the whole response inside the lock: moto answers with a list.
            return list(app(environ, start_response))

    return handle


_COMPARED = (
    ("Weight", "weight"),
    ("TTL", "ttl"),
    ("HealthCheckId", "health_check_id"),
    ("AliasTarget", "alias_target"),
    ("Failover", "failover"),
    ("Region", "region"),
    ("GeoLocation", "geo_location"),
    ("MultiValueAnswer", "multi_value_answer"),
)


def _norm(value):
    """One form for a value parsed from XML (strings) or from a template (numbers)."""
    if value is None:
        return None
    if isinstance(value, dict):
        return tuple(sorted((k, _norm(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_norm(v) for v in value)
    return str(value)


def _key(name, type_, set_identifier):
    return (name.rstrip(".").lower(), type_, set_identifier)


def _change_values(rr):
    records = [r["Value"] if isinstance(r, dict) else r for r in rr.get("ResourceRecords") or []]
    return tuple(_norm(rr.get(k)) for k, _ in _COMPARED) + (_norm(records),)


def _record_values(rs):
    return tuple(_norm(getattr(rs, a)) for _, a in _COMPARED) + (_norm(list(rs.records or [])),)


def route53_batches_as_aws():
    from moto.route53.exceptions import InvalidActionValue, Route53ClientError
    from moto.route53.models import Route53Backend

    original = Route53Backend.change_resource_record_sets

    def change_resource_record_sets(self, zoneid, change_list):
        if not any(c["Action"] in ("CREATE", "DELETE") for c in change_list):
            return original(self, zoneid, change_list)
        zone = self.get_hosted_zone(zoneid)
        current = {_key(r.name, r.type, r.set_identifier): _record_values(r) for r in zone.rrsets}
        for change in change_list:
            rr = change["ResourceRecordSet"]
            key = _key(rr["Name"], rr["Type"], rr.get("SetIdentifier"))
            what = f"[name='{key[0]}.', type='{key[1]}', set-identifier='{key[2]}']"
            if not key[0].endswith(zone.name.rstrip(".").lower()):
                raise Route53ClientError(
                    "InvalidChangeBatch", f"RRSet with DNS name {rr['Name']} is not permitted in zone {zone.name}"
                )
            if change["Action"] == "DELETE":
                if current.get(key) != _change_values(rr):
                    raise Route53ClientError(
                        "InvalidChangeBatch",
                        f"[Tried to delete resource record set {what} but the values provided do not match the current values]",
                    )
                del current[key]
            elif change["Action"] == "CREATE":
                if key in current:
                    raise Route53ClientError(
                        "InvalidChangeBatch", f"[Tried to create resource record set {what} but it already exists]"
                    )
                current[key] = _change_values(rr)
            elif change["Action"] == "UPSERT":
                current[key] = _change_values(rr)
            else:
                raise InvalidActionValue(change["Action"])
        # The whole batch is valid: apply it in order, as moto stores records.
        for change in change_list:
            rr = copy.deepcopy(change["ResourceRecordSet"])
            key = _key(rr["Name"], rr["Type"], rr.get("SetIdentifier"))
            if not rr["Name"].endswith("."):
                rr["Name"] += "."
            if "ResourceRecords" in rr:
                rr["ResourceRecords"] = [r["Value"] if isinstance(r, dict) else r for r in rr["ResourceRecords"]]
            if change["Action"] == "DELETE":
                zone.rrsets = [r for r in zone.rrsets if _key(r.name, r.type, r.set_identifier) != key]
            elif change["Action"] == "CREATE":
                zone.add_rrset(rr)
            else:
                zone.upsert_rrset(rr)
            zone.rr_changes.append(copy.deepcopy(change))

    Route53Backend.change_resource_record_sets = change_resource_record_sets


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, required=True)
    args = parser.parse_args()
    os.environ.setdefault("MOTO_PORT", str(args.port))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    route53_batches_as_aws()
    app = DomainDispatcherApplication(create_backend_app)
    run_simple(
        args.host,
        args.port,
        serialized(app),
        threaded=True,
        request_handler=MotoRequestHandler,
    )


if __name__ == "__main__":
    main()
