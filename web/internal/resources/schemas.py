"""Resource availability representation."""

from __future__ import annotations

import marshmallow as ma

from web.extensions import Schema


class QuotaSchema(Schema):
    limit = ma.fields.Integer(dump_only=True, allow_none=True, metadata={"description": "GPUs the tenant may hold"})
    used = ma.fields.Integer(dump_only=True, metadata={"description": "GPUs reserved by the tenant's deployments"})
    remaining = ma.fields.Integer(dump_only=True, allow_none=True)


class GpuTypeAvailabilitySchema(Schema):
    free_total = ma.fields.Integer(dump_only=True, metadata={"description": "Free GPUs of this type, all nodes"})
    largest_block = ma.fields.Integer(
        dump_only=True, metadata={"description": "Most GPUs free on one node: the largest replica that fits now"}
    )
    max_gpus_per_node = ma.fields.Integer(
        dump_only=True, metadata={"description": "GPUs of the biggest node of this type: the largest replica ever"}
    )
    nodes = ma.fields.Dict(
        keys=ma.fields.String(), values=ma.fields.Integer(), dump_only=True, metadata={"description": "Free per node"}
    )


class ReservationsInFlightSchema(Schema):
    reservations = ma.fields.Integer(dump_only=True)
    gpus = ma.fields.Integer(dump_only=True)


class AvailableResourcesSchema(Schema):
    """Free GPUs per type and per node, the largest block per type, reservations in flight, the quota."""

    gpu_types = ma.fields.Dict(
        keys=ma.fields.String(), values=ma.fields.Nested(GpuTypeAvailabilitySchema), dump_only=True
    )
    reservations_in_flight = ma.fields.Dict(
        keys=ma.fields.String(),
        values=ma.fields.Nested(ReservationsInFlightSchema),
        dump_only=True,
        metadata={"description": "Per GPU type, reservations held by jobs not yet finished"},
    )
    quota = ma.fields.Nested(QuotaSchema, dump_only=True)
