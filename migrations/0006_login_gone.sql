-- mailstack schema, version 6: a login check a pipelined batch can make.
--
-- login_gone() raises SQLSTATE MS001. The first statement of a
-- submission's one-trip batch (store.Submit) calls it when the session's
-- login is no longer valid (CASE WHEN <the test of store.CheckSession>
-- THEN true ELSE login_gone() END), which fails the batch: the check costs
-- no round trip of its own, and a revoked login stores and queues nothing.
-- VOLATILE, so that the planner never evaluates the call ahead of the CASE.
CREATE FUNCTION login_gone() RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    RAISE EXCEPTION 'login no longer valid' USING ERRCODE = 'MS001';
END $$;
