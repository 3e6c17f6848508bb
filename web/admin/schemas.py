"""Schema pieces shared by the admin resources: one cursor-pagination contract for every admin list."""

from __future__ import annotations

import marshmallow as ma

from web.extensions import QueryInteger, Schema

ADMIN_PAGE_DEFAULT = 50
ADMIN_PAGE_MAX = 500


class AdminPageArgsSchema(Schema):
    """``limit`` and ``cursor`` of an admin list; a resource's query schema adds its filters."""

    limit = QueryInteger(load_default=ADMIN_PAGE_DEFAULT, validate=ma.validate.Range(min=1, max=ADMIN_PAGE_MAX))
    cursor = ma.fields.String(metadata={"description": "next_cursor of the previous page"})


class AdminPageSchema(Schema):
    """One page of an admin list; a resource's page schema declares ``items``."""

    next_cursor = ma.fields.String(allow_none=True)
