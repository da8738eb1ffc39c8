-- Traces across the outbox (issue 13): the W3C traceparent of the call
-- that made the row owed (an admin write, a read report), so that the
-- push it causes is that call's child in one trace. NULL when traces are
-- not exported, and for rows owed by the dispatcher's own checks.
ALTER TABLE pushes ADD COLUMN traceparent TEXT;
