import { sql } from 'kysely';

/** Rows a relay, sweeper or processor handles per round. */
export const BATCH = 200;

/** A number of milliseconds as a Postgres interval (the database's clock does the arithmetic). */
export const ms = (n: number) => sql`(${n}::double precision * interval '1 millisecond')`;

export interface DeadJob {
  id: string;
  eventId: string;
  eventName: string;
  consumer: string;
  tenantId: string | null;
  attempts: number;
  maxAttempts: number;
  lastError: string | null;
  failedAt: string;
}

/** The columns of `job_deliveries` an operator sees. */
export interface DeliveryRow {
  id: string;
  event_id: string;
  event_name: string;
  consumer: string;
  tenant_id: string | null;
  attempts: number;
  max_attempts: number;
  last_error: string | null;
  updated_at: Date;
}

export function deadFromRow(r: DeliveryRow): DeadJob {
  return {
    id: r.id,
    eventId: r.event_id,
    eventName: r.event_name,
    consumer: r.consumer,
    tenantId: r.tenant_id,
    attempts: r.attempts,
    maxAttempts: r.max_attempts,
    lastError: r.last_error,
    failedAt: new Date(r.updated_at).toISOString(),
  };
}
