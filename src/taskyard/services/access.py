"""Who may call: API keys (stored hashed, shown once), JWTs, roles; and idempotent requests."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import jwt

from taskyard.domain.errors import AuthenticationFailed, Conflict, NotFound, PermissionDenied, ValidationFailed
from taskyard.services.scope import Scope
from taskyard.storage import access as access_rows
from taskyard.storage.tables import DEFAULT_PROJECT_ID

if TYPE_CHECKING:
    from taskyard.services.core import Core


class Role(StrEnum):
    ADMIN = "admin"
    OPERATOR = "operator"
    VIEWER = "viewer"
    WORKER = "worker"


class Permission(StrEnum):
    READ = "read"
    WRITE = "write"
    WORK = "work"
    ADMIN = "admin"
    TRACK = "track"  # send tracking events (spec 1): operators, and workers for their runs


GRANTS: dict[Role, frozenset[Permission]] = {
    Role.ADMIN: frozenset(Permission),
    Role.OPERATOR: frozenset({Permission.READ, Permission.WRITE, Permission.TRACK}),
    Role.VIEWER: frozenset({Permission.READ}),
    Role.WORKER: frozenset({Permission.READ, Permission.WORK, Permission.TRACK}),
}


@dataclass(frozen=True)
class Principal:
    subject: str
    role: Role
    kind: str  # "key", "jwt" or "anonymous"
    # The project this credential acts in; None (every project) only for admins without a project.
    project_id: int | None = DEFAULT_PROJECT_ID

    def __post_init__(self) -> None:
        if self.project_id is None and self.role is not Role.ADMIN:
            object.__setattr__(self, "project_id", DEFAULT_PROJECT_ID)  # only admins span projects

    def require(self, permission: Permission) -> None:
        if permission not in GRANTS[self.role]:
            raise PermissionDenied(f"role '{self.role.value}' may not {permission.value}")

    @property
    def scope(self) -> Scope:
        return Scope(self.project_id)


# Auth off: full rights, but in the default project only (as if every call named it).
ANONYMOUS = Principal("anonymous", Role.ADMIN, "anonymous", DEFAULT_PROJECT_ID)


@dataclass(frozen=True)
class NewKey:
    id: int
    name: str
    role: Role
    secret: str  # shown once, never stored
    project_id: int | None = None  # None: every project (admin keys created without one)
    project_uuid: str | None = None


@dataclass(frozen=True)
class JwtConfig:
    secret: str | None = None
    public_key: str | None = None
    audience: str = "taskyard"
    issuer: str | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.secret or self.public_key)


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class AccessService:
    KEYS_CACHE_SECONDS = 5.0

    def __init__(self, core: Core) -> None:
        self.core = core
        self.jwt = JwtConfig()
        self.forced: bool | None = None
        self._keys_exist: tuple[float, bool] | None = None

    def configure(self, *, forced: bool | None, jwt_config: JwtConfig) -> None:
        self.forced = forced
        self.jwt = jwt_config

    async def required(self) -> bool:
        """Forced on or off by settings; otherwise on as soon as any key exists or JWTs are set up."""
        if self.forced is not None:
            return self.forced
        if self.jwt.enabled:
            return True
        cached = self._keys_exist
        if cached is None or time.monotonic() - cached[0] > self.KEYS_CACHE_SECONDS:
            async with self.core.db.read() as conn:
                exists = await access_rows.live_key_count(conn) > 0
            self._keys_exist = cached = (time.monotonic(), exists)
        return cached[1]

    async def authenticate(self, token: str | None) -> Principal:
        if not await self.required():
            return ANONYMOUS
        if not token:
            raise AuthenticationFailed("authentication required: send 'Authorization: Bearer <key>'")
        if token.count(".") == 2 and self.jwt.enabled:
            return await self._from_jwt(token)
        return await self._from_key(token)

    async def _from_jwt(self, token: str) -> Principal:
        algorithm, key = ("RS256", self.jwt.public_key) if self.jwt.public_key else ("HS256", self.jwt.secret)
        try:
            claims: dict[str, Any] = jwt.decode(
                token, key or "", algorithms=[algorithm], audience=self.jwt.audience, issuer=self.jwt.issuer,
                options={"require": ["exp", "aud"]})
        except jwt.PyJWTError as exc:
            raise AuthenticationFailed(f"invalid token: {exc}") from exc
        try:
            role = Role(claims.get("role", Role.VIEWER))
        except ValueError as exc:
            raise AuthenticationFailed(f"invalid token: unknown role {claims.get('role')!r}") from exc
        project_id = await self._project_of_claims(claims, role)
        return Principal(str(claims.get("sub", "jwt")), role, "jwt", project_id)

    async def _project_of_claims(self, claims: dict[str, Any], role: Role) -> int | None:
        """`project` (a GUID, optionally with its `tenant`) scopes the token; without one, admins span every
        project and other roles act in the default project. A project that is not known is a 401."""
        project, tenant = claims.get("project"), claims.get("tenant")
        if project is None:
            if tenant is not None:
                raise AuthenticationFailed("invalid token: a 'tenant' claim needs a 'project' claim")
            return None if role is Role.ADMIN else DEFAULT_PROJECT_ID
        if not isinstance(project, str) or (tenant is not None and not isinstance(tenant, str)):
            raise AuthenticationFailed("invalid token: 'project' and 'tenant' must be GUID strings")
        try:
            found = await self.core.tenancy.find_project(project, tenant_uuid=tenant)
        except NotFound as exc:
            raise AuthenticationFailed("invalid token: unknown project") from exc
        return found.id

    async def _from_key(self, token: str) -> Principal:
        parts = token.split("_")
        if len(parts) != 3 or parts[0] != "ty":
            raise AuthenticationFailed("invalid API key")
        async with self.core.db.read() as conn:
            row = await access_rows.key_by_prefix(conn, parts[1])
        if row is None or row["revoked_at"] is not None or not hmac.compare_digest(row["key_hash"], _hash(token)):
            raise AuthenticationFailed("invalid API key")
        return Principal(f"key:{row['id']}", Role(row["role"]), "key", row["project_id"])

    async def create_key(self, name: str, role: str, project_uuid: str | None = None) -> NewKey:
        """A key acts in `project_uuid`; without one, admin keys span every project and other keys act in
        the default project."""
        try:
            chosen = Role(role)
        except ValueError as exc:
            raise ValidationFailed("role must be one of admin, operator, viewer, worker", field="role",
                                   rule="one_of", value=role) from exc
        project_id: int | None = None if chosen is Role.ADMIN else DEFAULT_PROJECT_ID
        project_guid: str | None = None
        if project_uuid is not None:
            try:
                project = await self.core.tenancy.find_project(project_uuid)
            except NotFound as exc:
                raise ValidationFailed(f"no project with id '{project_uuid}'", field="project", rule="exists",
                                       value=project_uuid) from exc
            project_id, project_guid = project.id, project.uuid
        prefix = secrets.token_hex(4)
        secret = f"ty_{prefix}_{secrets.token_urlsafe(32).replace('_', '-')}"
        async with self.core.db.write() as conn:
            key_id = await access_rows.insert_key(conn, {"name": name, "prefix": prefix, "key_hash": _hash(secret),
                                                         "role": chosen, "project_id": project_id,
                                                         "created_at": self.core.clock()})
        self._keys_exist = None
        return NewKey(key_id, name, chosen, secret, project_id, project_guid)

    async def list_keys(self) -> list[dict[str, Any]]:
        async with self.core.db.read() as conn:
            rows = await access_rows.list_keys(conn)
        return [{k: v for k, v in row.items() if k != "key_hash"} for row in rows]

    async def revoke_key(self, key_id: int) -> None:
        async with self.core.db.write() as conn:
            if not await access_rows.revoke_key(conn, key_id, self.core.clock()):
                raise NotFound(f"no live API key with id {key_id}")
        self._keys_exist = None

    async def begin_idempotent(self, scope: str, key: str, fingerprint: str) -> tuple[int, str] | None:
        """Reserve `key`; if it was used before, return the first answer (status, body)."""
        if len(key) > 255:
            raise ValidationFailed("Idempotency-Key is longer than 255 characters", field="Idempotency-Key",
                                   rule="max_length", value=key[:32] + "...")
        async with self.core.db.write() as conn:
            earlier = await access_rows.reserve_idempotency(conn, scope, key, fingerprint, self.core.clock())
        if earlier is None:
            return None
        if earlier["fingerprint"] != fingerprint:
            raise Conflict("this Idempotency-Key was used for a different request", field="Idempotency-Key")
        if earlier["status_code"] is None:
            raise Conflict("a request with this Idempotency-Key is still in progress", field="Idempotency-Key")
        return int(earlier["status_code"]), str(earlier["body"])

    async def finish_idempotent(self, scope: str, key: str, status_code: int, body: str) -> None:
        async with self.core.db.write() as conn:
            await access_rows.complete_idempotency(conn, scope, key, status_code, body)

    async def abandon_idempotent(self, scope: str, key: str) -> None:
        async with self.core.db.write() as conn:
            await access_rows.forget_idempotency(conn, scope, key)
