/**
 * Audit publishes no events: a record is written in the transaction of the change it describes
 * (`audit.record(trx, …)`), not delivered through the outbox.
 */
export {};
