/**
 * Audit has no errors of its own: a bad list query is rejected by its schema, a bad cursor by the
 * platform (`HTTP.BAD_CURSOR`), and a failed append fails the caller's transaction.
 */
export {};
