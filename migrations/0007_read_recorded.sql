-- When the configserver recorded a client's read, in microseconds since
-- the epoch: the transaction that turns the action `none` (unless
-- `always`). `read_at` is the depot's time of the read; between the two
-- is the read's way back (`pxeconf loadtest`'s boot: read → none).
ALTER TABLE pushes ADD COLUMN read_recorded_us INTEGER;
