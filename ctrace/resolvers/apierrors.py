"""What a refused API call says, read from the client's exception (pure: no client import).

The websocket calls (port-forward) fail as status 0 with the handshake's status and body in
the reason; the API server's own words for a 403 name the user, verb, resource and namespace.
"""

from __future__ import annotations

import re

from ctrace.record import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any

WHERE = r'(?: in the namespace "[^"]*"| at the cluster scope)?'
FORBIDDEN = re.compile(rf'(User "[^"]*" cannot [^"]*"[^"]*"[^"]*"[^"]*"{WHERE})')


def status(err: Any) -> tuple[int, str]:
    """The HTTP status and body of a failed call (an ApiException): 'Handshake status 403
    Forbidden ... b'{Status JSON}'' in a websocket call's reason."""
    if err.status:
        return int(err.status), str(err.body or "")
    reason = str(err.reason or "")
    found = re.search(r"Handshake status (\d{3})", reason)
    return (int(found.group(1)), reason) if found else (0, reason)


def forbidden(body: str) -> str:
    """'User "bob" cannot create resource "pods/portforward" in the namespace "ctrace-system"'
    from a 403's body (empty when it says no such thing)."""
    for _ in range(2):  # JSON escapes the quotes, and a bytes repr (the websocket's) the backslashes
        body = body.replace("\\\\", "\\").replace('\\"', '"')
    found = FORBIDDEN.search(body)
    return found.group(1).replace(' in API group ""', "") if found else ""
