-- A client's newest netboot action (`rules::active_product_sql`) by index:
-- a site's client has tens of localboot products on it, and the primary
-- key alone made every admin write's reconcile and the legacy look-up of
-- a client's actions read all of them and sort (docs/BENCHMARKS.md, fifth
-- pass).
CREATE INDEX product_on_clients_newest ON product_on_clients (client_id, modified DESC, product_id)
    WHERE action_request <> 'none';
