import type { Logger } from 'pino';
import type { DbScope } from '../../platform/db/database.ts';
import type { EventPublisher } from '../../platform/outbox/publisher.ts';
import type { JobRegistry } from '../../platform/outbox/registry.ts';
import type { AnyConnector } from './integrations.connector.ts';
import { IntegrationAttemptError, type IntegrationDelivery } from './integrations.delivery.ts';
import { BACKFILL_REQUESTED, DELIVERY_REQUESTED, INBOUND_RECEIVED, type BackfillRequestedPayload, type DeliveryRequestedPayload, type InboundReceivedPayload } from './integrations.events.ts';
import type { Inbound } from './integrations.inbound.ts';
import * as repo from './integrations.repo.ts';
import type { IntegrationsTables } from './integrations.repo.ts';

/** Where a backfill reads history: one page of past events per call, from the source module's facade (a replica read). */
export type BackfillSource = (
  tenantId: string,
  cursor: string | null,
  limit: number,
) => Promise<{ events: Array<{ id: string; name: string; occurredAt: string; payload: Record<string, unknown> }>; nextCursor: string | null }>;

export interface IntegrationsJobsDeps {
  scope: DbScope<IntegrationsTables>;
  events: EventPublisher;
  delivery: IntegrationDelivery;
  inbound: Inbound;
  connectors: ReadonlyMap<string, AnyConnector>;
  backfillSource: BackfillSource;
  logger: Logger;
  maxAttempts: number;
  backoffBaseMs: number;
  backoffMaxMs: number;
}

export const BACKFILL_PAGE = 100;

/** The events any shipped connector consumes: one fan-out consumer each. */
export function consumedEvents(connectors: ReadonlyMap<string, AnyConnector>): string[] {
  return [...new Set([...connectors.values()].flatMap((c) => c.events))].sort();
}

/**
 * One page of a backfill, outside any job transaction (the source reads through another module's facade,
 * which opens its own): events → deliveries (deduplicated per connection + event id) → cursor, committed
 * together; then the next page's request. A crash between pages leaves the committed cursor: calling the
 * backfill action again resumes there.
 */
export async function runBackfillPage(deps: IntegrationsJobsDeps, tenantId: string, connectionId: string): Promise<void> {
  const conn = await deps.scope.withTenantRead(tenantId, (trx) => repo.findConnection(trx, tenantId, connectionId));
  if (!conn || conn.backfillStatus !== 'running') return;
  const page = await deps.backfillSource(tenantId, conn.backfillCursor, BACKFILL_PAGE);
  await deps.scope.withTenant(tenantId, async (trx) => {
    const current = await repo.findConnection(trx, tenantId, connectionId, true);
    if (!current || current.backfillStatus !== 'running' || current.backfillCursor !== conn.backfillCursor) return; // moved on meanwhile
    let added = 0;
    for (const e of page.events) added += (await deps.delivery.fanOut(trx, { ...e, tenantId }, connectionId)).length;
    await repo.setBackfill(trx, tenantId, connectionId, { status: page.nextCursor ? 'running' : 'done', cursor: page.nextCursor, addCount: added });
    if (page.nextCursor) await deps.events.add(trx, { name: BACKFILL_REQUESTED, tenantId, payload: { connectionId } satisfies BackfillRequestedPayload });
  });
}

/** Fan-out per consumed event, the sender (batched, retried, dead-lettered), the backfill pages. */
export function registerIntegrationsJobs(jobs: JobRegistry, deps: IntegrationsJobsDeps): void {
  // Fan-out writes only delivery rows and requests in the handler's transaction: batch-safe.
  for (const name of consumedEvents(deps.connectors)) {
    jobs.subscribe(
      name,
      `integrations.fanout.${name}`,
      async (event, { trx }) => {
        await deps.delivery.fanOut(deps.scope.join(trx), event);
      },
      { batchSafe: true, background: name.startsWith('billing.') },
    );
  }

  jobs.subscribe<DeliveryRequestedPayload>(
    DELIVERY_REQUESTED,
    'integrations.sender',
    async (event, { trx, attempt }) => {
      if (!event.tenantId) return;
      const outcome = await deps.delivery.attempt(deps.scope.join(trx), event.tenantId, event.payload, { number: attempt, max: deps.maxAttempts });
      if (outcome.retry) throw new IntegrationAttemptError(`integration delivery failed: ${outcome.error}`);
    },
    { maxAttempts: deps.maxAttempts, backoffBaseMs: deps.backoffBaseMs, backoffMaxMs: deps.backoffMaxMs },
  );

  // Inbound vendor events, stored by the webhook route: processed here, once each.
  jobs.subscribe<InboundReceivedPayload>(INBOUND_RECEIVED, 'integrations.inbound_processor', async (event, { trx }) => {
    if (event.tenantId) await deps.inbound.process(deps.scope.join(trx), event.tenantId, event.payload.inboxId);
  });

  jobs.subscribe<BackfillRequestedPayload>(BACKFILL_REQUESTED, 'integrations.backfill', async (event) => {
    const tenantId = event.tenantId;
    if (!tenantId) return;
    // After this handler's transaction (the embedded database has one connection).
    setImmediate(() => {
      runBackfillPage(deps, tenantId, event.payload.connectionId).catch((err) =>
        deps.logger.error({ tenantId, connectionId: event.payload.connectionId, error: (err as Error).message }, 'integration backfill page failed; call backfill again to resume'),
      );
    });
  });
}
