-- A depot's blocked configs in client order (`ListPending` with `blocked`,
-- `pxeconf pending --blocked`): a page reads the blocked rows after its
-- token, not every row of the depot. Blocked rows are few and seldom
-- change, so the push path pays next to nothing for it.
CREATE INDEX pushes_blocked_by_client ON pushes (depot_id, client_id) WHERE blocked <> '';
