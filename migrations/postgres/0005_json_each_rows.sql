-- The planner's guess for a json_each list: 10 elements, not the 1,000 it
-- assumes for any set-returning function. With 1,000, an admin write's
-- one-client reconcile query hashed every row of `clients` (a sequential
-- scan: 3.0 ms at 10,200 clients) where an index probe per element takes
-- 0.6 ms; bulk lists of thousands are probed by index too, as on SQLite.
ALTER FUNCTION json_each(text) ROWS 10;
