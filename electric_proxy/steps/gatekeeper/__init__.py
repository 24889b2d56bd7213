"""The gatekeeper pattern: authorise a shape once, then let a signed token carry it.

Two halves, usually in two places:

1. **The gatekeeper endpoint** runs in your app, after your own login. It decides which
   shape the user may sync and answers with a short-lived token whose ``shape`` claim holds
   that exact shape (``table``, ``where``, ``params``, ``columns``, ``replica``)::

       issuer = GatekeeperIssuer(key=os.environ["GATEKEEPER_SECRET"],
                                 url="https://app.example/v1/shape", ttl=300)

       async def authorize(request: web.Request) -> Grant | None:
           user = await my_session_user(request)          # your auth
           if user is None:
               return None                                # 401
           return {"sub": user.id,
                   "shape": {"table": "todos", "where": "org_id = $1",
                             "params": [user.org_id], "columns": ["id", "title"]}}

       app.router.add_post("/gatekeeper/todos", issuer.handler(authorize))

   The answer is JSON, shaped after Electric's Phoenix gatekeeper::

       {"url": "https://app.example/v1/shape",
        "headers": {"Authorization": "Bearer <token>"},
        "shape": {"table": "todos", "where": "org_id = $1", "params": {"1": "acme"},
                  "columns": ["id", "title"], "replica": "default"},
        "expires_at": 1767225600}

   which a browser passes on as is:
   ``new ShapeStream({url: g.url, headers: g.headers, params: g.shape})``. ``authorize`` may
   raise :class:`~electric_proxy.Forbidden` (403) or any other ``ProxyError``.

2. **The verifier step** (``GatekeeperVerifier``, config name ``gatekeeper``) sits in the
   proxy's chain in place of an authenticator *and* the policy. It verifies the token with
   the very code :class:`~electric_proxy.steps.jwt.JwtAuth` uses, then requires the shape
   the client asks for to equal the claim **parameter by parameter**: ``table``, ``where``,
   every ``params[n]`` (no more, no fewer), ``columns`` and ``replica``. Electric's Caddy and
   edge-function gatekeepers compare only table, where and columns, so a token for
   ``where=org_id = $1`` would serve any ``params[1]``; here that is a 403. Protocol
   parameters (``offset``, ``handle``, ``live``, ``cursor``, ...) are not compared. The
   upstream shape parameters are then set from the verified claim, never from the client.
   Subset snapshots (``subset__*``, ``POST``) are refused: the claim does not cover them.

A missing, invalid or expired token is a 401 (``invalid_token`` / ``expired_token``); a
valid token for another shape is a 403 ``shape_not_allowed`` naming the parameter.
"""

from .claim import ShapeClaim
from .issuer import GatekeeperIssuer, Grant
from .verifier import GatekeeperVerifier

__all__ = ["GatekeeperIssuer", "GatekeeperVerifier", "Grant", "ShapeClaim"]
