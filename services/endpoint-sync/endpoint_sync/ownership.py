"""Which of the built-in AI Gateway's objects (secrets, model definitions, endpoints) are the
endpoint sync's own, so that it never builds the stack's endpoints on one someone else made or can
change (issue 25).

A name proves nothing: with basic auth any user may create `promptlab-stack-gateway` or
`promptlab-stack-<model>` first, pointing at their own server. Nor does `created_by`: MLflow stores
what the client sends there (a user may write "admin"). What MLflow does enforce is who may change
an object: its creator gets a MANAGE grant on it, an admin may grant others EDIT or MANAGE, and
everyone else gets `default_permission` (READ in the stack, tracking's start.py). So an object is
the sync's own when
- it names no other creator: `created_by` is empty or the user the sync logs in as, and
- with basic auth, no one but an admin holds a grant that lets them change it (EDIT, MANAGE, any
  permission unknown here, or a workspace-wide MANAGE); a grant cancelled by a DENY still counts,
  which errs on the safe side.
Without basic auth there are no users: anyone can change anything, and only the content check
(sync.py, every pass) guards the stack's objects.

The grants come from one call per pass, `GET /api/2.0/mlflow/users/list` (admins only), which
lists every user with the grants of their roles.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

SECRET = "gateway_secret"
DEFINITION = "gateway_model_definition"
ENDPOINT = "gateway_endpoint"
ID_FIELD = {SECRET: "secret_id", DEFINITION: "model_definition_id", ENDPOINT: "endpoint_id"}
WORKSPACE = "workspace"

# Grants that let a user see or use an object but not change it. Any other one (EDIT, MANAGE, or a
# permission this code does not know) counts as a way to change it.
HARMLESS_PERMISSIONS = frozenset({"READ", "USE", "NO_PERMISSIONS", "DENY"})


@dataclass(frozen=True)
class Owners:
    """Who, besides the admins, may change the AI Gateway's objects."""

    user: str | None = None  # the user the sync logs in as; None without basic auth
    # (resource type, object id or "*") -> the non-admin users with a grant to change it;
    # ("workspace", "*") -> those who administer the workspace.
    editors: Mapping[tuple[str, str], frozenset[str]] = field(default_factory=dict)

    @classmethod
    def from_users(cls, user: str | None, users: list[dict]) -> Owners:
        """From the users/list answer: every non-admin user's grants that allow changes."""
        editors: dict[tuple[str, str], set[str]] = {}
        for u in users:
            if u.get("is_admin"):
                continue
            for role in u.get("roles") or []:
                for grant in role.get("permissions") or []:
                    if grant.get("permission") in HARMLESS_PERMISSIONS:
                        continue
                    kind = grant.get("resource_type", "")
                    pattern = "*" if kind == WORKSPACE else grant.get("resource_pattern", "")
                    editors.setdefault((kind, pattern), set()).add(u.get("username", "?"))
        return cls(user, {k: frozenset(v) for k, v in editors.items()})

    def not_ours(self, kind: str, obj: dict) -> str | None:
        """Why `obj` (of resource type `kind`) is not the sync's own; None when it is."""
        creator = obj.get("created_by") or ""
        if creator and creator != self.user:
            return f"created by {creator!r}"
        others = (
            self.editors.get((kind, obj.get(ID_FIELD[kind], "")), frozenset())
            | self.editors.get((kind, "*"), frozenset())
            | self.editors.get((WORKSPACE, "*"), frozenset())
        )
        if others:
            who = ", ".join(repr(u) for u in sorted(others))
            return f"{'user' if len(others) == 1 else 'users'} {who} can change it"
        return None
